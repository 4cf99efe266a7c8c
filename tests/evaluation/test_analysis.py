"""From a recorded call to figures and verdicts: timelines built by hand (pure)."""

from __future__ import annotations

from pathlib import Path

from gateway.evaluation.analysis import Marks, Rec, analyze
from gateway.evaluation.report import render_markdown, summarize
from gateway.evaluation.scenario import parse

SET = parse({
    "question": [{"id": "q", "say": "How deep is it?", "facts": ["3.8"]},
                 {"id": "u", "say": "How warm is it?", "unanswerable": True}],
    "pause": [{"id": "p", "say": "What time | do you open?"}],
    "backchannel": [{"id": "b", "say": "Rules?", "backchannel": "Mhm."}],
    "barge_in": [{"id": "g", "say": "Prices?", "barge": "Where are you?",
                  "barge_facts": ["mill lane"]}],
}, Path("t.toml"), ())
S = {s.id: s for s in SET.scenarios}
KNOWN = {"3", "8", "14"}


def ev(t: float, kind: str, **fields: object) -> Rec:
    return Rec(t, event={"type": kind, **fields})


def audio(t: float, n: int = 960) -> Rec:
    return Rec(t, audio=n)


def reply(t: float, rid: str, text: str, frames: int = 5) -> list[Rec]:
    return [ev(t, "stream_start", response_id=rid, turn_id=1),
            ev(t + 0.01, "token", response_id=rid, text=text.split()[0]),
            ev(t + 0.02, "agent_response", response_id=rid, text=text),
            ev(t + 0.03, "tts_start", response_id=rid, encoding="pcm_s16le",
               sample_rate=24000),
            ev(t + 0.04, "metrics", response_id=rid, turn_id=1, stt_ms=300.0,
               first_audio_ms=450.5),
            *(audio(t + 0.05 + 0.02 * i) for i in range(frames))]


def test_question_latency_stages_and_verdict() -> None:
    log = [ev(0.0, "session_started", output={"encoding": "pcm_s16le", "sample_rate": 24000}),
           ev(1.2, "speech_started", turn_id=1), ev(2.25, "speech_stopped", turn_id=1),
           ev(2.3, "transcription", text="How deep is it?", final=True, turn_id=1),
           *reply(2.4, "r1", "It is 3.8 metres deep.")]
    r = analyze(S["q"], log, Marks(1.0, 2.0), KNOWN)
    assert r.passed and r.verdict is not None and r.verdict.correct
    assert r.latency_ms == 450.0  # first audio at 2.45 s, last voiced frame at 2.0 s
    assert r.stages_ms["end_of_turn"] == 250.0 and r.stages_ms["reply_start"] == 400.0
    assert r.server_metrics == {"stt_ms": 300.0, "first_audio_ms": 450.5}
    assert r.heard == "How deep is it?" and not r.cut_off


def test_a_turn_ended_in_the_pause_is_a_cut_off() -> None:
    log = [ev(1.5, "speech_stopped", turn_id=1),
           ev(1.7, "transcription", text="What time", final=True, turn_id=1),
           *reply(1.8, "r0", "I don't know."),
           ev(3.4, "speech_stopped", turn_id=2), *reply(3.6, "r1", "We open at 8.")]
    r = analyze(S["p"], log, Marks(0.5, 3.0), KNOWN)
    assert not r.passed and len(r.cut_off) == 3 and "cut off" in r.reason
    assert r.answer == "We open at 8." and r.latency_ms == 650.0


def test_unanswerable_needs_an_abstention() -> None:
    r = analyze(S["u"], reply(2.4, "r1", "The water is 29 degrees."), Marks(1.0, 2.0), KNOWN)
    assert not r.passed and r.verdict is not None and r.verdict.invented == ("29",)
    r = analyze(S["u"], reply(2.4, "r1", "Sorry, I don't know."), Marks(1.0, 2.0), KNOWN)
    assert r.passed and r.unanswerable


def test_no_reply_fails_with_a_reason() -> None:
    r = analyze(S["q"], [ev(0.5, "error", code="PROVIDER_ERROR", message="x")],
                Marks(0.1, 0.3), KNOWN)
    assert not r.passed and r.reason == "no reply" and r.errors == ["PROVIDER_ERROR: x"]
    assert r.verdict is not None and not r.verdict.correct  # counts as a wrong answer


def test_backchannel_that_interrupts_and_gets_answered_fails() -> None:
    log = [*reply(2.4, "r1", "No diving, no running.", frames=60),
           ev(3.9, "speech_started", turn_id=2), ev(3.92, "interrupted", response_id="r1"),
           ev(3.93, "tts_complete", response_id="r1", interrupted=True, played_ms=1400),
           ev(4.3, "transcription", text="Mhm.", final=True, turn_id=2),
           *reply(4.5, "r2", "I don't know.")]
    r = analyze(S["b"], log, Marks(1.0, 2.0, 3.6, 3.8), KNOWN)
    assert not r.passed and r.interrupted and r.answered_overlay
    assert r.interrupt_reaction_ms == 320.0 and r.overlay_heard == "Mhm."
    assert r.overlay_events[:3] == ["speech_started", "interrupted", "tts_complete"]
    quiet = [*reply(2.4, "r1", "No diving.", frames=150),
             ev(5.5, "tts_complete", response_id="r1", interrupted=False),
             ev(5.6, "stream_end", response_id="r1")]
    r = analyze(S["b"], quiet, Marks(1.0, 2.0, 3.6, 3.8), KNOWN)
    assert r.passed and r.interrupted is False and not r.answered_overlay
    assert r.longest_audio_gap_ms is not None and r.longest_audio_gap_ms <= 21


def test_barge_in_stops_the_reply_and_gets_its_answer() -> None:
    log = [*reply(2.4, "r1", "Adults pay 6 pounds.", frames=60),
           ev(3.9, "interrupted", response_id="r1"), audio(3.91), audio(3.92),
           *reply(5.0, "r2", "We are at 14 Mill Lane.")]
    r = analyze(S["g"], log, Marks(1.0, 2.0, 3.6, 4.4), KNOWN)
    assert r.passed and r.interrupted and r.interrupt_reaction_ms == 300.0
    assert r.audio_after_interrupt_ms == 40.0  # two 20 ms frames at 24 kHz after it
    assert r.overlay_verdict is not None and r.overlay_verdict.correct
    assert r.overlay_latency_ms == 650.0
    missed = analyze(S["g"], reply(2.4, "r1", "Adults pay 6 pounds.", frames=150),
                     Marks(1.0, 2.0, 3.6, 4.4), KNOWN)
    assert not missed.passed and missed.interrupted is False


def test_summary_and_markdown() -> None:
    ok = analyze(S["q"], reply(2.4, "r1", "It is 3.8 metres."), Marks(1.0, 2.0), KNOWN)
    bad = analyze(S["u"], reply(2.6, "r1", "It is 29 degrees."), Marks(1.0, 2.0), KNOWN)
    s = summarize([ok, bad], {"set": "t", "url": "u", "transport": "v1", "assistant": "a",
                              "started": "now", "duration_s": 1.0})
    assert s["correct_answers"]["passed"] == 1 and s["correct_answers"]["total"] == 2
    assert s["unanswerable_abstained"] == {"passed": 0, "total": 1, "percent": 0.0,
                                           "failed": ["u"]}
    assert s["invented_numbers"] == ["u: 29"]
    assert s["latency_ms"]["n"] == 2 and s["latency_ms"]["max"] == 650.0
    md = render_markdown(s, [ok, bad])
    assert "| correct answers | 1/2 (50 %) |" in md and "| u | ✗ |" in md
