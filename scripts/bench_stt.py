"""Speech recognition on a ``gateway eval`` set's own caller audio, offline.

Renders every question (pause scenarios whole, as one held turn), barge-in, backchannel
and noise of the set with the eval's voices (gateway.evaluation.audio), transcribes it
with Whisper as the gateway does (fitted window), with and without a decoder prompt made
from a knowledge base's vocabulary, and prints the word error rate and decode time of
each. ``--out`` writes the transcripts as JSON for ``bench_answers.py --transcripts``.

Measured on the default set (50 utterances): a glossary prompt of the base's words made
Whisper worse, not better (tiny.en: mean WER 20 % -> 40 %, it repeats the question;
base: 7 % -> 14 %, a cough became "Monday, Friday, Friday, ..."), so the gateway does
not prompt; the option stays here to measure it again on other models or sets.

Run from the repository root:
  PYTHONPATH=. python scripts/bench_stt.py eval/scenarios/default.toml --prompt none,kb
  PYTHONPATH=. python scripts/bench_stt.py eval/scenarios/default.toml \
      --prompt-from eval/scenarios/library.toml    # another base's words: hallucination?
  PYTHONPATH=. python scripts/bench_stt.py eval/scenarios/default.toml \
      --compare tiny.en:1,tiny.en:5,base:1         # model:beam variants, interleaved

``--compare`` decodes every utterance with each variant in turn (no prompt), so a loaded
machine slows them alike: compare its per-utterance time ratios, not absolute times.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import statistics
import time
from collections.abc import Iterable
from pathlib import Path

from gateway.config import Config
from gateway.evaluation.audio import Voices
from gateway.evaluation.scenario import Utterance, load
from gateway.evaluation.scoring import word_error_rate
from gateway.pipeline.answer import stem
from gateway.providers.whisper_stt import WhisperSTT, resolve_model_dir

MISHEARD = 0.25  # the eval report's threshold

# Whisper keeps at most 223 prompt tokens; English runs ~1.3 tokens a word, so this many
# characters stay well inside that and keep the decoder's prefill short.
MAX_CHARS = 600
_WORD = re.compile(r"[^\W\d_][\w'’-]*[^\W\d_]")
# Words any recogniser gets right without help: spending prompt room on them only
# dilutes it. Function words and the commonest verbs and adjectives of short texts.
_COMMON = frozenset(
    """a about above after again all also always am an and any are as at be been before
    being below between both but by can cannot could did do does doing down during each
    every few for from further had has have having he her here hers him his how i if in
    into is it its just may me might more most must my no nor not now of off on once only
    or other our out over own same she should so some such than that the their them then
    there these they this those through to too under until up very was we were what when
    where which while who whom why will with would you your yours get gets got give go
    goes make makes take takes use used come comes keep kept run runs new good one two
    three four five six seven eight nine ten first last next per day days week weeks
    year years time times people please""".split())


def vocabulary(texts: Iterable[str], max_chars: int = MAX_CHARS) -> str:
    """The distinct uncommon words of ``texts`` (titles first, then bodies), most
    frequent first and in their written case, joined as a comma list of at most
    ``max_chars``: a glossary prompt. Empty for texts with no such words."""
    counts: dict[str, int] = {}
    first: dict[str, str] = {}
    for text in texts:
        for word in _WORD.findall(text):
            key = stem(word.lower().replace("’", "'"))
            if word.lower() in _COMMON or len(word) < 3:
                continue
            counts[key] = counts.get(key, 0) + 1
            first.setdefault(key, word)
    order = sorted(counts, key=lambda k: -counts[k])  # stable: ties keep text order
    out: list[str] = []
    size = 0
    for key in order:
        word = first[key]
        if size + len(word) + 2 > max_chars:
            break
        out.append(word)
        size += len(word) + 2
    return ", ".join(out)


def utterances(path: Path) -> list[tuple[str, str, Utterance]]:
    """(id, kind, utterance) of everything a caller says or sounds in the set."""
    out = []
    for s in load(path).scenarios:
        if s.kind in ("question", "pause"):
            out.append((s.id, s.kind, s.caller))
        if s.overlay is not None:
            out.append((f"{s.id}/overlay", s.kind, s.overlay))
    return out


def render(voices: Voices, u: Utterance, cache: Path) -> bytes:
    key = hashlib.sha1(repr((u.text, u.wav, u.noise, str(u.voice), u.speed,
                             u.pause_ms, u.apart)).encode()).hexdigest()[:16]
    f = cache / f"{key}.pcm"
    if not f.is_file():
        f.write_bytes(voices.clip(u).audio)
    return f.read_bytes()


def kb_prompt(path: Path) -> str:
    return vocabulary(f"{d.title}. {d.content}" for d in load(path).documents)


def kb_text(path: Path) -> str:
    return " ".join(" ".join(f"{d.title}. {d.content}" for d in load(path).documents
                             ).split())[:600]


def compare(path: Path, variants: list[str], fit: float, cache: Path) -> None:
    """Each utterance decoded by every ``model:beam`` variant in turn; the time ratios
    to the first variant are per utterance, so machine load cancels out."""
    data = Config().data_path
    stts = {}
    for v in variants:
        model, _, beam = v.partition(":")
        stts[v] = WhisperSTT(resolve_model_dir(model, data), workers=1,
                             beam_size=int(beam or 1), fit_window_s=fit)
    voices = Voices()
    items = [(u, render(voices, u, cache)) for _, _, u in utterances(path)]
    items = [(u, audio) for u, audio in items if u.text]
    for stt in stts.values():
        stt.transcribe(items[0][1])  # warm up
    times: dict[str, list[float]] = {v: [] for v in variants}
    wers: dict[str, list[float]] = {v: [] for v in variants}
    for u, audio in items:
        for v, stt in stts.items():
            started = time.perf_counter()
            heard = stt.transcribe(audio)
            times[v].append((time.perf_counter() - started) * 1000)
            wers[v].append(word_error_rate(u.clean_text, heard))
    first = times[variants[0]]
    for v in variants:
        ratio = statistics.median(t / f for t, f in zip(times[v], first, strict=True))
        print(f"{v:12} decode median {statistics.median(times[v]):5.0f} ms, "
              f"p90 {statistics.quantiles(times[v], n=10)[-1]:5.0f} ms, x{ratio:.2f} of "
              f"{variants[0]}; mean WER {statistics.mean(wers[v]):.1%}, misheard "
              f"{sum(w >= MISHEARD for w in wers[v])}/{len(items)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("set", type=Path)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--prompt", default="none,kb",
                        help="comma list of none | kb (glossary) | text (the base's text)")
    parser.add_argument("--fit", type=float, default=Config().stt.fit_window_s,
                        help="stt.fit_window_s (0: the full 30 s window)")
    parser.add_argument("--prompt-from", type=Path, help="take the kb prompt from this set")
    parser.add_argument("--beam", type=int, default=Config().stt.beam_size)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/gateway-bench-audio"))
    parser.add_argument("--out", type=Path, help="transcripts as JSON (the last prompt's)")
    parser.add_argument("--compare", help="model:beam,... decoded interleaved, no prompt")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    if args.compare:
        compare(args.set, args.compare.split(","), args.fit, args.cache)
        return
    cfg = Config()
    stt = WhisperSTT(resolve_model_dir(args.model, cfg.data_path), workers=1,
                     beam_size=args.beam,
                     fit_window_s=args.fit)
    voices = Voices()
    items = [(i, k, u, render(voices, u, args.cache)) for i, k, u in utterances(args.set)]
    prompt_kb = kb_prompt(args.prompt_from or args.set)
    stt.transcribe(items[0][3])  # warm up
    for mode in args.prompt.split(","):
        prompt = {"kb": prompt_kb, "text": kb_text(args.prompt_from or args.set)}.get(mode)
        rows, times = [], []
        for sid, kind, u, audio in items:
            started = time.perf_counter()
            heard = stt.transcribe(audio, prompt=prompt)
            times.append((time.perf_counter() - started) * 1000)
            said = u.clean_text if u.text else u.label
            wer = word_error_rate(said, heard) if u.text else float(bool(heard.strip()))
            rows.append({"id": sid, "kind": kind, "said": said, "heard": str(heard),
                         "wer": round(wer, 3)})
            if args.verbose or wer >= MISHEARD:
                print(f"  [{mode}] {sid:28} {wer:4.0%} {said!r} -> {str(heard)!r}")
        spoken = [r for r in rows if not r["said"].startswith("<")]
        print(f"{args.set.name} {args.model} beam {args.beam} prompt={mode}: mean WER "
              f"{statistics.mean(r['wer'] for r in spoken):.1%}, misheard (>= 25 %) "
              f"{sum(r['wer'] >= MISHEARD for r in spoken)}/{len(spoken)}, noises with "
              f"words {sum(bool(r['heard']) for r in rows if r['said'].startswith('<'))}, "
              f"decode median {statistics.median(times):.0f} ms")
        if args.out:
            args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
