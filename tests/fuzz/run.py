"""Run one fuzz target with atheris (libFuzzer): ``python tests/fuzz/run.py TARGET
[CORPUS_DIR] [libFuzzer flags, e.g. -runs=100000 -max_total_time=600]``.

The parsers (gateway.protocol.*) are instrumented for coverage; the corpus directory
(created and seeded with the target's valid messages when empty) keeps what the
fuzzer found interesting between runs. A crash writes ``crash-*`` with the input and
exits non-zero.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports(include=["gateway.protocol", "gateway.audio"]):
    from targets import SEEDS, TARGETS


def main() -> None:
    target = sys.argv[1]
    args = [sys.argv[0], *sys.argv[2:]]
    for arg in sys.argv[2:]:
        if not arg.startswith("-") and not Path(arg).is_file():  # the corpus directory
            corpus = Path(arg)
            corpus.mkdir(parents=True, exist_ok=True)
            if not any(corpus.iterdir()):
                for seed in SEEDS[target]:
                    (corpus / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
    atheris.Setup(args, TARGETS[target])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
