"""End of turn replayed offline on a ``gateway eval`` set's own caller audio.

Every question and mid-sentence pause scenario of the set is rendered with the eval's
voices, followed by silence, and fed frame by frame through the gateway's own VAD input
and ``Endpointer`` with the config's turn settings. Each ``TurnCheck`` is answered as
``TurnChecks`` does: Smart Turn on the utterance so far; the words of the pause (the
quick model's decode from ``stt.pause_words_ms`` for checks before ``--final-ms`` of
silence, the final model's from ``early_final_ms`` after, when its decode is done in the
server), scored by the
SmolLM2 text model; ``turn_checks.combine`` makes the verdict, applied ``--verdict-ms``
of audio later (a verdict on a pause the caller has since ended is stale, as live).

What it prints per scenario: the silence at which the turn ended (``cut`` where a pause
scenario's turn ended in its pause) and every check's figures; then pause scenarios
not cut, and the questions' end-of-turn silence p50 / p95 / how many waited for
``max_wait_ms``, and its p50 from the caller's last voiced frame (what the eval
reports; ``--set detector=silence`` gives the old fixed timer's on the same audio).
Decodes and model scores are cached on disk, so comparing settings
(``--set hold_ms=700``) reruns in seconds; so is the rendered audio (Piper's voices
differ a little each time they speak: ``--fresh`` for another take). Not timed: this
measures the decisions, the live ``gateway eval`` measures the latency.

Run from the repository root:
  PYTHONPATH=. python scripts/bench_turns.py eval/scenarios/default.toml
  PYTHONPATH=. python scripts/bench_turns.py eval/scenarios/default.toml --set hold_ms=700
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import statistics
from pathlib import Path
from typing import Any

from bench_stt import render  # the same rendered audio, cached

from gateway.config import Config
from gateway.evaluation.audio import FRAME_MS, Voices, voiced_span
from gateway.evaluation.scenario import Utterance, load
from gateway.pipeline.turn_checks import combine, with_doubt
from gateway.pipeline.turns import (
    Endpointer,
    EndpointerSettings,
    PauseAudio,
    SpeechStopped,
    TurnCheck,
    TurnSettings,
)
from gateway.pipeline.vad_input import PIPELINE_RATE, VadInput
from gateway.providers.base import Transcript, last_word_of
from gateway.providers.registry import create_vad

TAIL_MS = 3500  # silence after the caller's last word: longer than any max_wait_ms


class Scores:
    """The models, each result cached on disk by the audio's or the text's hash."""

    def __init__(self, cfg: Config, cache: Path) -> None:
        self.cfg = cfg
        self.file = cache / "turn-scores.json"
        self.saved: dict[str, Any] = json.loads(self.file.read_text()) \
            if self.file.is_file() else {}
        self._models: dict[str, Any] = {}

    def _model(self, name: str) -> Any:
        if name not in self._models:
            if name == "smart_turn":
                from gateway.providers.smart_turn import SmartTurn
                self._models[name] = SmartTurn()
            elif name == "text":
                from gateway.providers.text_turn import TextTurn
                self._models[name] = TextTurn()
            else:
                from gateway.providers.whisper_stt import WhisperSTT, resolve_model_dir
                model, _, beam = name.partition(":")
                self._models[name] = WhisperSTT(
                    resolve_model_dir(model, self.cfg.data_path), workers=1,
                    beam_size=int(beam), fit_window_s=self.cfg.stt.fit_window_s)
        return self._models[name]

    def _cached(self, kind: str, item: bytes | str, run: Any) -> Any:
        raw = item if isinstance(item, bytes) else item.encode()
        key = f"{kind}:{hashlib.sha1(raw).hexdigest()}"
        if key not in self.saved:
            self.saved[key] = run(item)
        return self.saved[key]

    def sound(self, pcm: bytes) -> float:
        return float(self._cached("smart_turn", pcm, self._model("smart_turn").end_probability))

    def words(self, model: str, pcm: bytes) -> Transcript:
        def decode(audio: bytes) -> list[Any]:
            heard = self._model(model).transcribe(audio, last_word=True)
            return [str(heard), last_word_of(heard)]

        text, last = self._cached(f"{model}+last", pcm, decode)
        return Transcript(text, None, last)

    def text(self, words: str) -> float | None:
        if not words.strip():
            return None
        return float(self._cached("text", words, self._model("text").end_probability))

    def save(self) -> None:
        self.file.write_text(json.dumps(self.saved))


@dataclasses.dataclass
class Replay:
    """One utterance through the endpointer: where its turns ended, what the checks said."""

    ends: list[float] = dataclasses.field(default_factory=list)  # silence_ms at each stop
    stops_at: list[float] = dataclasses.field(default_factory=list)  # audio ms of each stop
    checks: list[str] = dataclasses.field(default_factory=list)


def replay(audio: bytes, cfg: Config, turn: TurnSettings, scores: Scores,
           models: tuple[str, str], final_ms: int, verdict_ms: int) -> Replay:
    frame_ms = cfg.vad.frame_ms
    vad_in = VadInput(create_vad(cfg), frame_ms, PIPELINE_RATE)
    ep = Endpointer(EndpointerSettings(
        frame_ms=frame_ms, start_ms=cfg.vad.start_ms, stop_ms=cfg.vad.stop_ms,
        barge_in_min_ms=cfg.vad.barge_in_min_ms, preroll_ms=cfg.vad.preroll_ms,
        interim_interval_ms=cfg.stt.interim_interval_ms, early_final_ms=cfg.stt.early_final_ms,
        pause_words_ms=cfg.stt.pause_words_ms,
        max_utterance_ms=int(cfg.stt.max_utterance_s * 1000), turn=turn))
    out = Replay()
    pending: list[tuple[int, TurnCheck, bool | None]] = []
    pause_pcm: dict[tuple[int, int, bool], bytes] = {}  # (turn, pause, words only)
    frames = vad_in.frames(audio + bytes(2 * PIPELINE_RATE * TAIL_MS // 1000))
    for i, frame in enumerate(frames):
        events = ep.push(frame, vad_in.stream.is_speech(frame), replying=False)
        for _due, check, verdict in [p for p in pending if p[0] == i]:
            events.extend(ep.verdict(check, verdict))
        pending = [p for p in pending if p[0] > i]
        for ev in events:
            if isinstance(ev, PauseAudio):
                pause_pcm[(ev.turn_id, ev.pause, ev.words_only)] = ev.pcm
            elif isinstance(ev, TurnCheck):
                final = pause_pcm.get((ev.turn_id, ev.pause, False))
                pcms = (pause_pcm.get((ev.turn_id, ev.pause, True), final), final)
                verdict = _judge(ev, pcms, turn, scores, models, final_ms, out)
                pending.append((i + max(1, verdict_ms // frame_ms), ev, verdict))
            elif isinstance(ev, SpeechStopped):
                out.ends.append(ev.silence_ms)
                out.stops_at.append(ep.now_ms)
    return out


def _judge(check: TurnCheck, pcms: tuple[bytes | None, bytes | None], turn: TurnSettings,
           scores: Scores, models: tuple[str, str], final_ms: int, out: Replay) -> bool | None:
    """``pcms``: the pause's audio as the quick model and the final model decoded it."""
    p = scores.sound(check.pcm)
    later = check.silence_ms >= final_ms and pcms[1] is not None
    model, pause_pcm = (models[1], pcms[1]) if later else (models[0], pcms[0])
    words = scores.words(model, pause_pcm) if pause_pcm else Transcript("")
    if later and pcms[0]:  # the quick model's doubt is kept, as live
        words = with_doubt(words, scores.words(models[0], pcms[0]))
    text = scores.text(words)
    verdict = combine(p, words, text, check.silence_ms, turn)
    out.checks.append(f"{check.silence_ms:.0f}ms p={p:.2f} {model.split(':')[0]} "
                      f"{str(words)!r} last={words.last_word} "
                      f"text={'-' if text is None else f'{text:.3f}'} -> {verdict}")
    return verdict


def _scenarios(path: Path) -> list[tuple[str, str, Utterance]]:
    return [(s.id, s.kind, s.caller) for s in load(path).scenarios
            if s.kind in ("question", "pause", "pause_apart")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("set", type=Path)
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="a TurnSettings field, e.g. hold_ms=700 (repeatable)")
    parser.add_argument("--final-ms", type=int, default=400,
                        help="silence from which the final model's words are done")
    parser.add_argument("--verdict-ms", type=int, default=140,
                        help="a check's verdict arrives this long after it was asked")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/gateway-bench-audio"))
    parser.add_argument("--fresh", action="store_true",
                        help="synthesise anew (Piper's voices differ run to run), not cached")
    parser.add_argument("--quick-beam", type=int,
                        help="the quick model's beam (default: stt.quick_beam_size)")
    parser.add_argument("--early-final-ms", type=int,
                        help="decode the pause from this much silence (stt.early_final_ms)")
    parser.add_argument("--pause-words-ms", type=int,
                        help="the quick model's decode of the pause from this much silence "
                             "(stt.pause_words_ms)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    cfg = Config()
    if args.early_final_ms is not None:
        cfg = cfg.replace(stt={"early_final_ms": args.early_final_ms})
    if args.pause_words_ms is not None:
        cfg = cfg.replace(stt={"pause_words_ms": args.pause_words_ms})
    turn = TurnSettings.from_config(cfg.turn)
    for item in args.overrides:
        key, _, value = item.partition("=")
        kind = type(getattr(turn, key))
        turn = dataclasses.replace(turn, **{key: kind(value)})
    quick = cfg.stt.quick_model or cfg.stt.model
    models = (f"{quick}:{args.quick_beam or cfg.stt.quick_beam_size}",
              f"{cfg.stt.model}:{cfg.stt.beam_size}")
    scores, voices = Scores(cfg, args.cache), Voices()
    question_ends, after_voiced, waited, pauses, cut = [], [], [], 0, []
    try:
        for sid, kind, u in _scenarios(args.set):
            audio = voices.clip(u).audio if args.fresh else render(voices, u, args.cache)
            r = replay(audio, cfg, turn, scores, models, args.final_ms, args.verdict_ms)
            end = r.ends[-1] if r.ends else float("nan")
            # As the eval measures it: from the caller's last voiced frame.
            after_voice = (r.stops_at[-1] - (voiced_span(audio)[1] + 1) * FRAME_MS
                           if r.stops_at else float("nan"))
            broken = len(r.ends) > 1
            if kind == "question":
                question_ends.append(end)
                after_voiced.append(after_voice)
                if end >= turn.max_wait_ms:
                    waited.append(sid)
            else:
                pauses += 1
                if broken:
                    cut.append(sid)
            mark = "CUT" if broken else f"{end:.0f}ms"
            print(f"{sid:24} {kind:11} {mark:>7}  {u.clean_text}")
            if args.verbose or broken or end >= turn.hold_ms:
                for c in r.checks:
                    print(f"{'':36}{c}")
    finally:
        scores.save()
    q = sorted(question_ends)
    print(f"\n{turn}\npauses not cut: {pauses - len(cut)}/{pauses} (cut: {', '.join(cut)})")
    print(f"questions' end-of-turn silence: p50 {statistics.median(q):.0f} ms, "
          f"p95 {q[int(0.95 * (len(q) - 1))]:.0f} ms, max_wait: {len(waited)} "
          f"({', '.join(waited)}); from the last voiced frame p50 "
          f"{statistics.median(after_voiced):.0f} ms")


if __name__ == "__main__":
    main()
