"""Replay benchmark entry point: ``python benchmarks/replay.py [--quick] [--help]``.

Starts the Vantum server (one process, pinned to one core), the fake providers
with modelled latencies, and N concurrent browser-protocol callers replaying the
speech WAVs in ``fixtures/``; then the same against the Pipecat peer in
``peers/`` when its environment exists (``bash benchmarks/peers/setup_pipecat.sh``).
Prints a table and writes ``results/latest.json`` and ``results/latest.png``.
The implementation is ``replay_harness.py`` beside this file (also ``vantum
bench``); the method and the latest figures are in docs/benchmarks.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

from replay_harness import main  # this script's directory is first on sys.path

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], root=Path(__file__).resolve().parent))
