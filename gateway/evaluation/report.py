"""The report: a summary of the results, rendered as JSON, Markdown and a histogram PNG.

``summarize`` and ``render_markdown`` are pure; ``write`` puts the three files on disk.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.evaluation.analysis import Result
from gateway.evaluation.scenario import PAUSE_KINDS
from gateway.evaluation.scoring import Rate, stats

MISHEARD_WER = 0.25  # a turn whose transcript is this far off was misheard, not misanswered
OLD_TIMER_MS = 400  # the fixed silence timer that ended every turn before issue 10
STAGES = ("end_of_turn", "final_transcript", "reply_start", "first_token", "first_audio")


def summarize(results: Sequence[Result], meta: dict[str, Any]) -> dict[str, Any]:
    answered = [r for r in results if r.kind in ("question", "pause") and r.verdict]
    correct, unanswerable, heard_right = Rate(), Rate(), Rate()
    invented: list[str] = []
    for r in answered:
        assert r.verdict is not None
        correct.add(r.verdict.correct, r.id)
        if r.wer is not None and r.wer < MISHEARD_WER:
            heard_right.add(r.verdict.correct, r.id)
        invented += [f"{r.id}: {n}" for n in r.verdict.invented]
    for r in answered:
        if r.unanswerable and r.verdict is not None:
            unanswerable.add(r.verdict.correct, r.id)
    cut = {kind: Rate() for kind in PAUSE_KINDS}
    for r in results:
        if r.kind in cut:
            cut[r.kind].add(not r.cut_off, r.id)
    kinds: dict[str, Rate] = {}
    for r in results:
        kinds.setdefault(r.kind, Rate()).add(r.passed, r.id)
    latencies = [r.latency_ms for r in results if r.kind in ("question", "pause")]
    eot = [r.stages_ms.get("end_of_turn") for r in results if r.kind == "question"]
    server_keys = sorted({k for r in results for k in r.server_metrics})
    barge = [r for r in results if r.kind == "barge_in"]
    return {
        **meta,
        "scenarios": len(results),
        "passed": {k: v.as_dict() for k, v in kinds.items()},
        "correct_answers": correct.as_dict(),
        "correct_answers_heard_right": heard_right.as_dict(),
        "transcript_wer": stats(r.wer for r in results if r.kind in ("question", "pause")
                                ).as_dict(),
        "misheard": [r.id for r in results if r.wer is not None and r.wer >= MISHEARD_WER],
        "unanswerable_abstained": unanswerable.as_dict(),
        "invented_numbers": invented,
        "latency_ms": stats(latencies).as_dict(),
        "stages_ms": {k: stats(r.stages_ms.get(k) for r in results
                               if r.kind in ("question", "pause")).as_dict() for k in STAGES},
        "server_metrics_ms": {k: stats(r.server_metrics.get(k) for r in results
                                       if r.kind in ("question", "pause")).as_dict()
                              for k in server_keys},
        "end_of_turn_ms": {**stats(eot).as_dict(), "old_timer_ms": OLD_TIMER_MS},
        "not_cut_off": cut["pause"].as_dict(),
        "not_cut_off_apart": cut["pause_apart"].as_dict(),
        "false_interruptions": [r.id for r in results
                                if r.kind in ("backchannel", "false_interruption")
                                and r.interrupted],
        "missed_interruptions": [r.id for r in barge if r.interrupted is False],
        "barge_in_reaction_ms": stats(r.interrupt_reaction_ms for r in barge).as_dict(),
        "audio_after_interrupt_ms": stats(r.audio_after_interrupt_ms for r in barge).as_dict(),
        "errors": sum(len(r.errors) for r in results),
        "client_lag_ms": stats(r.client_lag_ms for r in results).as_dict(),
    }


# --- Markdown ----------------------------------------------------------------------------


def _pct(rate: dict[str, Any]) -> str:
    if not rate["total"]:
        return "n/a (none run)"
    return f"{rate['passed']}/{rate['total']} ({rate['percent']:.0f} %)"


def _fig(v: float | None) -> str:
    return "–" if v is None else f"{v:.0f}"


def _wer(v: float | None) -> str:
    return "–" if v is None else f"{v:.0%}"


def _stat_row(name: str, s: dict[str, Any]) -> str:
    return (f"| {name} | {s['n']} | {_fig(s['p50'])} | {_fig(s['p95'])} | {_fig(s['max'])} "
            f"| {_fig(s['mean'])} |")


def _cell(text: str | None, limit: int = 160) -> str:
    t = " ".join((text or "").split()).replace("|", "\\|")
    return t if len(t) <= limit else t[: limit - 1] + "…"


def _summary_rows(s: dict[str, Any]) -> list[str]:
    return [
        "| figure | value |",
        "|---|---|",
        f"| correct answers | {_pct(s['correct_answers'])} |",
        f"| correct answers where the transcript was right (word error rate < "
        f"{MISHEARD_WER:.0%}) | {_pct(s['correct_answers_heard_right'])} |",
        f"| misheard turns (word error rate ≥ {MISHEARD_WER:.0%}); mean word error rate | "
        f"{len(s['misheard'])} {_cell(', '.join(s['misheard']))}; "
        f"{_wer(s['transcript_wer']['mean'])} |",
        f"| unanswerable questions answered with \"I don't know\" | "
        f"{_pct(s['unanswerable_abstained'])} |",
        f"| numbers not in the knowledge base | {len(s['invented_numbers'])} "
        f"{_cell(', '.join(s['invented_numbers']))} |",
        f"| last voiced frame → first reply audio, p50 / p95 / max | "
        f"{_fig(s['latency_ms']['p50'])} / {_fig(s['latency_ms']['p95'])} / "
        f"{_fig(s['latency_ms']['max'])} ms (n={s['latency_ms']['n']}) |",
        f"| end of turn after the last voiced frame, p50 (old fixed timer {OLD_TIMER_MS} ms) | "
        f"{_fig(s['end_of_turn_ms']['p50'])} ms |",
        f"| mid-sentence pauses not cut off | {_pct(s['not_cut_off'])} |",
        f"| the same, halves synthesised apart (each ends like a sentence; harder) | "
        f"{_pct(s.get('not_cut_off_apart', {'total': 0}))} |",
        f"| false interruptions (backchannels, noises) | {len(s['false_interruptions'])} "
        f"{_cell(', '.join(s['false_interruptions']))} |",
        f"| missed barge-ins | {len(s['missed_interruptions'])} "
        f"{_cell(', '.join(s['missed_interruptions']))} |",
        f"| barge-in: reply audio received after `interrupted`, max | "
        f"{_fig(s['audio_after_interrupt_ms']['max'])} ms |",
        f"| barge-in: caller's first voiced frame → `interrupted`, p50 / max | "
        f"{_fig(s['barge_in_reaction_ms']['p50'])} / {_fig(s['barge_in_reaction_ms']['max'])}"
        " ms |",
        f"| error events | {s['errors']} |",
        f"| the runner's own lateness sending audio frames, max | "
        f"{_fig(s['client_lag_ms']['max'])} ms |",
    ]


def render_markdown(summary: dict[str, Any], results: Sequence[Result]) -> str:
    s = summary
    lines = [
        f"# gateway eval: {s['set']}",
        "",
        f"{s['started']} · {s['url']} · transport {s['transport']} · assistant "
        f"`{s['assistant']}` · {s['scenarios']} scenarios · {s['duration_s']:.0f} s",
        "",
        f"Load average of the machine running the runner: {s.get('load_before')} before, "
        f"{s.get('load_after')} after, on {s.get('cpus')} CPUs (latencies grow with it).",
        "",
        "## Summary",
        "",
        *_summary_rows(s),
        "",
        "Passed by kind: " + ", ".join(f"{k} {_pct(v)}" for k, v in s["passed"].items()),
        "",
        "![latency histogram](latency.png)",
        "",
        "## Latency by stage",
        "",
        "Client side, from the caller's last voiced frame (ms):",
        "",
        "| stage | n | p50 | p95 | max | mean |",
        "|---|---|---|---|---|---|",
        *(_stat_row(k, v) for k, v in s["stages_ms"].items()),
    ]
    if s["server_metrics_ms"]:
        lines += ["", "Server side (`metrics` events; from the gateway's end-of-turn decision, "
                  "ms):", "", "| figure | n | p50 | p95 | max | mean |",
                  "|---|---|---|---|---|---|",
                  *(_stat_row(k, v) for k, v in s["server_metrics_ms"].items())]
    lines += _detail_tables(results)
    return "\n".join(lines) + "\n"


def _detail_tables(results: Sequence[Result]) -> list[str]:
    lines = ["", "## Questions", "",
             "| id | ok | latency ms | said | heard | WER | answer | why not |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        if r.kind in ("question", *PAUSE_KINDS):
            lines.append(f"| {r.id} | {'✓' if r.passed else '✗'} | {_fig(r.latency_ms)} | "
                         f"{_cell(r.said, 80)} | {_cell(r.heard, 80)} | {_wer(r.wer)} | "
                         f"{_cell(r.answer)} | "
                         f"{_cell(r.reason, 120)} |")
    lines += ["", "## Interruptions", "",
              "| id | kind | ok | interrupted | reaction ms | audio after ms | longest gap ms "
              "| said over the reply | heard | events | second answer | why not |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if r.kind in ("backchannel", "barge_in", "false_interruption"):
            lines.append(
                f"| {r.id} | {r.kind} | {'✓' if r.passed else '✗'} | {r.interrupted} | "
                f"{_fig(r.interrupt_reaction_ms)} | {_fig(r.audio_after_interrupt_ms)} | "
                f"{_fig(r.longest_audio_gap_ms)} | {_cell(r.overlay_said, 40)} | "
                f"{_cell(r.overlay_heard, 40)} | {_cell(' '.join(r.overlay_events), 80)} | "
                f"{_cell(r.overlay_answer, 100)} | {_cell(r.reason, 100)} |")
    return lines


# --- files -------------------------------------------------------------------------------


def histogram(latencies: Sequence[float], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    try:
        if latencies:
            top = max(max(latencies), 1000.0)
            ax.hist(latencies, bins=[b * 100.0 for b in range(int(top // 100) + 2)],
                    color="#4a7ab5", edgecolor="white")
        for x, label in ((800, "p50 target"), (1000, "p95 target")):
            ax.axvline(x, color="#c0392b", linestyle="--", linewidth=1)
            ax.text(x, ax.get_ylim()[1] * 0.95, f" {label}", color="#c0392b", fontsize=8,
                    va="top")
        ax.set_xlabel("caller's last voiced frame → first reply audio byte (ms)")
        ax.set_ylabel("turns")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title, fontsize=10)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)


def write(out: Path, summary: dict[str, Any], results: Sequence[Result]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    doc = {"summary": summary, "results": [r.as_dict() for r in results]}
    (out / "report.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n",
                                     "utf-8")
    (out / "report.md").write_text(render_markdown(summary, results), "utf-8")
    lat = [r.latency_ms for r in results
           if r.kind in ("question", "pause") and r.latency_ms is not None]
    histogram(lat, out / "latency.png", f"{summary['set']}: {len(lat)} turns")
