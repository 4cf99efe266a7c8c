"""From a recorded call to a scenario's figures and verdicts (pure: no sockets, no clock).

A call is the list of everything the client received, each with its arrival time, plus
the client's own marks: when the caller's first and last voiced frames were sent, and
the same for an overlay (backchannel, barge-in, noise) spoken during the reply.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.evaluation.scenario import PAUSE_KINDS, Scenario
from gateway.evaluation.scoring import Verdict, judge, word_error_rate

# Events that end the caller's turn; one before the caller finished is a cut-off.
TURN_ENDERS = ("speech_stopped", "stream_start")
AFTER_S = 1.0  # events this long after the reply's end still count as the overlay's


@dataclass(frozen=True, slots=True)
class Rec:
    t: float  # monotonic seconds
    event: dict[str, Any] | None = None
    audio: int = 0  # bytes of a binary (reply audio) message


@dataclass(frozen=True, slots=True)
class Marks:
    speech_first: float
    speech_last: float  # send time of the caller's last voiced frame
    overlay_first: float | None = None
    overlay_last: float | None = None


@dataclass(slots=True)
class Result:
    id: str
    kind: str
    said: str
    unanswerable: bool = False
    passed: bool = False
    reason: str = ""
    heard: str = ""  # the gateway's final transcript(s)
    wer: float | None = None  # word error rate of ``heard`` against what was said
    answer: str | None = None
    latency_ms: float | None = None  # last voiced frame -> first reply audio byte
    stages_ms: dict[str, float] = field(default_factory=dict)  # client-side, same origin
    server_metrics: dict[str, float] = field(default_factory=dict)
    cut_off: list[str] = field(default_factory=list)  # "speech_stopped 420 ms early"
    verdict: Verdict | None = None
    interrupted: bool | None = None
    interrupt_reaction_ms: float | None = None  # overlay's first voiced frame -> interrupted
    audio_after_interrupt_ms: float | None = None
    longest_audio_gap_ms: float | None = None  # reply audio stalled while the overlay played
    overlay_said: str | None = None
    overlay_events: list[str] = field(default_factory=list)  # what the gateway said about it
    overlay_heard: str | None = None  # what the gateway transcribed of the overlay, if any
    answered_overlay: bool | None = None
    overlay_answer: str | None = None
    overlay_verdict: Verdict | None = None
    overlay_latency_ms: float | None = None
    errors: list[str] = field(default_factory=list)
    client_lag_ms: float | None = None  # the runner's own lateness sending audio frames

    def as_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__slots__}
        for key in ("verdict", "overlay_verdict"):
            v = out[key]
            out[key] = None if v is None else {
                "correct": v.correct, "reason": v.reason, "missing": list(v.missing),
                "forbidden": list(v.forbidden), "invented": list(v.invented),
                "abstained": v.abstained}
        return out


def _ms(a: float, b: float) -> float:
    return round((b - a) * 1000.0, 1)


def _first(log: list[Rec], pred: Callable[[Rec], bool], after: float = float("-inf"),
           before: float = float("inf")) -> Rec | None:
    return next((r for r in log if after <= r.t < before and pred(r)), None)


def _is(kind: str, **match: Any) -> Callable[[Rec], bool]:
    return lambda r: (r.event is not None and r.event.get("type") == kind
                      and all(r.event.get(k) == v for k, v in match.items()))


def _audio(r: Rec) -> bool:
    return r.audio > 0


def _answer(log: list[Rec], rid: str) -> str | None:
    done = _first(log, _is("agent_response", response_id=rid))
    if done is not None:
        return str(done.event["text"]) if done.event else None
    tokens = [str(r.event.get("text", "")) for r in log if _is("token", response_id=rid)(r)
              and r.event is not None]
    return "".join(tokens).strip() or None


def _bytes_per_ms(log: list[Rec]) -> float:
    """Reply audio bytes per ms (s16le at the session's output rate; mu-law: 1 byte)."""
    for r in log:
        if r.event is not None and r.event.get("type") in ("tts_start", "session_started"):
            fmt = r.event.get("output", r.event)
            width = 1 if fmt.get("encoding") in ("mulaw", "alaw") else 2
            return float(fmt.get("sample_rate", 24000)) * width / 1000.0
    return 48.0


def analyze(s: Scenario, log: list[Rec], marks: Marks, known_numbers: set[str]) -> Result:
    res = Result(s.id, s.kind, s.caller.clean_text or s.caller.label, s.unanswerable)
    end = marks.speech_last
    for r in log:
        if r.event is not None and marks.speech_first < r.t < end and (
                r.event.get("type") in TURN_ENDERS
                or _is("transcription", final=True)(r)):
            res.cut_off.append(f"{r.event['type']} {_ms(r.t, end):.0f} ms before the end")
    res.errors = [f"{r.event.get('code')}: {r.event.get('message')}"
                  for r in log if r.event is not None and r.event.get("type") == "error"]
    start = _first(log, _is("stream_start"), after=end)
    res.heard = " / ".join(str(r.event["text"]) for r in log if r.event is not None
                           and _is("transcription", final=True)(r)
                           and (start is None or r.t <= start.t))
    if res.heard and s.caller.text is not None:
        res.wer = round(word_error_rate(res.said, res.heard), 3)
    if start is None or start.event is None:
        res.reason = "no reply"
        if s.judged:  # counted as a wrong answer, not left out
            res.verdict = judge(None, facts=s.facts, forbid=s.forbid,
                                unanswerable=s.unanswerable, known_numbers=known_numbers,
                                question=res.said)
        return _verdict(s, res)
    rid = start.event["response_id"]
    _stages(res, log, end, rid, start)
    res.answer = _answer(log, rid)
    if s.judged:
        res.verdict = judge(res.answer, facts=s.facts, forbid=s.forbid,
                            unanswerable=s.unanswerable, known_numbers=known_numbers,
                            question=res.said)
    if s.overlay is not None and marks.overlay_first is not None:
        _overlay(s, res, log, rid, marks, known_numbers)
    return _verdict(s, res)


def _stages(res: Result, log: list[Rec], end: float, rid: str, start: Rec) -> None:
    points = {
        "end_of_turn": _first(log, _is("speech_stopped"), after=end),
        "final_transcript": _first(log, _is("transcription", final=True), after=end),
        "reply_start": start,
        "first_token": _first(log, _is("token", response_id=rid), after=end),
        "first_audio": _first(log, _audio, after=start.t),
    }
    res.stages_ms = {k: _ms(end, r.t) for k, r in points.items() if r is not None}
    res.latency_ms = res.stages_ms.get("first_audio")
    metrics = _first(log, _is("metrics", response_id=rid))
    if metrics is not None and metrics.event is not None:
        res.server_metrics = {k: float(v) for k, v in metrics.event.items()
                              if isinstance(v, int | float) and not isinstance(v, bool)
                              and k != "turn_id"}


def _overlay(s: Scenario, res: Result, log: list[Rec], rid: str, marks: Marks,
             known_numbers: set[str]) -> None:
    o_first = marks.overlay_first or 0.0
    o_last = marks.overlay_last or o_first
    stop = _first(log, _is("interrupted", response_id=rid), after=o_first)
    res.interrupted = stop is not None
    done = _first(log, _is("tts_complete", response_id=rid))
    if done is not None and done.event is not None and done.event.get("interrupted"):
        res.interrupted = True
    per_ms = _bytes_per_ms(log)
    if stop is not None:
        res.interrupt_reaction_ms = _ms(o_first, stop.t)
        nxt = _first(log, _is("tts_start"), after=stop.t)
        res.audio_after_interrupt_ms = round(sum(
            r.audio for r in log if stop.t < r.t < (nxt.t if nxt else float("inf"))
        ) / per_ms, 1)
    until = min(x.t for x in (stop, done) if x is not None) if (stop or done) else o_last + 5
    times = [r.t for r in log if _audio(r) and o_first - 0.1 <= r.t <= until]
    if len(times) > 1:
        res.longest_audio_gap_ms = max(_ms(a, b) for a, b in itertools.pairwise(times))
    second = _first(log, lambda r: _is("stream_start")(r) and r.event is not None
                    and r.event.get("response_id") != rid, after=o_first)
    res.overlay_said = s.overlay.label if s.overlay is not None else None
    res.overlay_events = [str(r.event.get("type")) for r in log if r.event is not None
                          and o_first <= r.t <= until + AFTER_S
                          and r.event.get("type") not in ("token", "viseme", "word_timing")]
    res.overlay_heard = " / ".join(str(r.event["text"]) for r in log if r.event is not None
                                   and r.t >= o_first and _is("transcription", final=True)(r))
    res.answered_overlay = second is not None
    if second is not None and second.event is not None:
        rid2 = second.event["response_id"]
        res.overlay_answer = _answer(log, rid2)
        audio2 = _first(log, _audio, after=second.t)
        res.overlay_latency_ms = _ms(o_last, audio2.t) if audio2 else None
        if s.overlay_facts and s.overlay is not None:
            res.overlay_verdict = judge(res.overlay_answer, facts=s.overlay_facts, forbid=(),
                                        unanswerable=False, known_numbers=known_numbers,
                                        question=s.overlay.clean_text)


def _verdict(s: Scenario, res: Result) -> Result:
    """Whether the scenario passed, by what its kind is about."""
    if res.reason:  # no reply at all
        res.passed = False
        return res
    reasons: list[str] = []
    if s.kind in ("question", *PAUSE_KINDS) and res.verdict is not None \
            and not res.verdict.correct:
        reasons.append(res.verdict.reason)
    if s.kind in PAUSE_KINDS and res.cut_off:
        reasons.append("cut off: " + ", ".join(res.cut_off))
    if s.kind in ("backchannel", "false_interruption"):
        if res.interrupted:
            reasons.append("the reply was interrupted")
        if s.kind == "backchannel" and res.answered_overlay:
            reasons.append("answered the backchannel as a turn")
    if s.kind == "barge_in" and not res.interrupted:
        reasons.append("the barge-in did not interrupt the reply")
    if s.kind in ("backchannel", "barge_in", "false_interruption") and res.interrupted is None:
        reasons.append("the overlay was not played (the reply ended first)")
    res.passed = not reasons
    res.reason = "; ".join(reasons)
    return res
