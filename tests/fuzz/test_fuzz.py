"""The parsers' fuzz targets (tests/fuzz/targets.py) in CI: the seeds and every input a
fuzzing run once crashed on (tests/fuzz/regressions/TARGET-*), then a short
coverage-guided atheris run of each target. Longer runs: tests/fuzz/README.md."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from targets import SEEDS, TARGETS  # noqa: E402

FUZZ_SECONDS = 4


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_seeds_and_past_crashes(target: str) -> None:
    inputs = [*SEEDS[target], *(p.read_bytes() for p in HERE.glob(f"regressions/{target}-*"))]
    assert inputs
    for data in inputs:
        TARGETS[target](data)


def _rss_limit_mb() -> int:
    """1 GiB above this process's peak: a forked child inherits the parent's peak RSS
    (ru_maxrss), which libFuzzer reads as its own, so a fixed limit fails whenever the
    suite's process already holds the models."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024 + 1024


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_short_fuzzing_run(target: str, tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(HERE.parents[1]), os.environ.get("PYTHONPATH", "")) if p)}
    done = subprocess.run(
        [sys.executable, str(HERE / "run.py"), target, str(tmp_path / "corpus"),
         f"-max_total_time={FUZZ_SECONDS}", f"-rss_limit_mb={_rss_limit_mb()}",
         f"-artifact_prefix={tmp_path}/"],
        capture_output=True, text=True, timeout=120, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Done " in done.stderr and " runs in " in done.stderr
    runs = int(done.stderr.split("Done ")[-1].split()[0])
    assert runs > 1000, done.stderr[-500:]  # it really ran
