"""``gateway eval`` end to end: the CI scenario set against a real gateway.

The gateway is the real app on real sockets with the embedded models (webrtcvad,
Whisper base with tiny.en for quick decodes, Piper; the extractive answer engine of the
test gateways); the runner is the real CLI in its own process, speaking with Piper and
espeak-ng in real time. The figures are checked for shape and sense, not against latency
targets (CI is noisy).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from gateway.store.db import Database
from gateway.store.keys import KeyStore

ROOT = Path(__file__).resolve().parents[2]
KINDS = {"question", "pause", "backchannel", "barge_in", "false_interruption"}


async def admin_key(gw) -> str:
    db = Database.from_config(gw.cfg)
    try:
        _, key = await KeyStore(db).create("eval")
    finally:
        await db.close()
    return key


def eval_cli(*args: str, key: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["PYTHONPATH"] = str(ROOT)
    if key:
        env["GATEWAY_EVAL_API_KEY"] = key  # not on the command line: ps would show it
    return subprocess.run([sys.executable, "-m", "gateway", "eval", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240, check=False)


async def test_ci_set_through_gateway_eval(gateway, tmp_path: Path) -> None:
    key = await admin_key(gateway)
    out = tmp_path / "report"
    done = eval_cli("eval/scenarios/ci.toml", "--url", gateway.base, "--out", str(out),
                    key=key)
    assert done.returncode == 0, done.stderr[-3000:]
    assert key not in done.stdout + done.stderr
    doc = json.loads((out / "report.json").read_text("utf-8"))
    md = (out / "report.md").read_text("utf-8")
    png = (out / "latency.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    s, results = doc["summary"], doc["results"]
    assert s["scenarios"] == len(results) == 6 and {r["kind"] for r in results} == KINDS
    assert s["errors"] == 0, [r["errors"] for r in results]
    assert s["client_lag_ms"]["n"] == 6 and s["cpus"] >= 1

    # Every question was heard, answered and timed, with stages in their causal order.
    turns = [r for r in results if r["kind"] in ("question", "pause")]
    for r in turns:
        assert r["answer"] and r["heard"], r
        st = r["stages_ms"]
        assert 0 < st["end_of_turn"] <= st["reply_start"] <= st["first_audio"] < 10000, st
        assert r["latency_ms"] == st["first_audio"]
        assert {"stt_ms", "first_audio_ms"} <= set(r["server_metrics"])
    lat = s["latency_ms"]
    assert lat["n"] == len(turns) and lat["p50"] <= lat["p95"] <= lat["max"]
    # The extractive engine quotes the base: the answerable question is right, and
    # nothing it says is a number the base does not hold.
    assert next(r for r in results if r["id"] == "deep-end")["passed"]
    assert s["invented_numbers"] == []
    assert s["correct_answers"]["total"] == 3 and s["unanswerable_abstained"]["total"] == 1

    # The barge-in question stopped the reply, which then answered it.
    barge = next(r for r in results if r["kind"] == "barge_in")
    assert barge["interrupted"] is True and barge["passed"], barge
    assert 0 < barge["interrupt_reaction_ms"] < 3000
    assert "960418" in (barge["overlay_answer"] or "")
    for r in results:
        if r["kind"] in ("backchannel", "false_interruption"):
            assert r["interrupted"] in (True, False), r  # the overlay was played
            assert r["longest_audio_gap_ms"] is not None

    assert "| correct answers |" in md and "![latency histogram](latency.png)" in md
    for r in results:
        assert f"| {r['id']} |" in md

    # The run cleans up after itself: its assistant is gone.
    async with httpx.AsyncClient(base_url=gateway.base, headers={"x-api-key": key}) as http:
        got = await http.get(f"/api/v1/assistants/{s['assistant']}")
    assert got.status_code == 404


async def test_bad_credentials_and_set_are_clear_errors(gateway, tmp_path: Path) -> None:
    done = eval_cli("eval/scenarios/ci.toml", "--url", gateway.base, "--out",
                    str(tmp_path / "r"), key="gw_wrong")
    assert done.returncode == 2 and "admin API key" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "r").exists()
    bad = tmp_path / "bad.toml"
    bad.write_text("[[question]]\nsay = 'Hi'\nvoice = 'festival:kal'\n", "utf-8")
    done = eval_cli(str(bad), "--url", gateway.base, key=None)
    assert done.returncode == 2 and "ENGINE:NAME" in done.stderr
    bad.write_text("[[question]]\nsay = 'Hi'\nvoice = 'espeak:zz-nothing'\n", "utf-8")
    done = eval_cli(str(bad), "--url", gateway.base, key=None)
    assert done.returncode == 2 and "cannot make the callers' audio" in done.stderr
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    done = eval_cli("eval/scenarios/ci.toml", "--only", "question", "--url",
                    f"http://127.0.0.1:{port}", key="k")
    assert done.returncode == 2 and "cannot reach the gateway" in done.stderr
    assert "Traceback" not in done.stderr
