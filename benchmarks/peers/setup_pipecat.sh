#!/usr/bin/env bash
# Creates the Pipecat peer's own environment, apart from Vantum's, for
# benchmarks/replay.py. Idempotent. Usage: bash benchmarks/peers/setup_pipecat.sh [VENV]
# Default VENV: $VANTUM_PEER_VENV or ~/.cache/vantum/pipecat-venv (where replay.py looks;
# otherwise pass --peer-python VENV/bin/python or set VANTUM_PEER_PYTHON).
set -euo pipefail
venv="${1:-${VANTUM_PEER_VENV:-$HOME/.cache/vantum/pipecat-venv}}"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
# Pinned so that figures stay comparable; bump deliberately and re-run the benchmark.
"$venv/bin/pip" install --quiet --disable-pip-version-check \
  "pipecat-ai[websocket,deepgram,openai,cartesia]==1.14.0" \
  "uvicorn>=0.32,<1.0" "msgpack>=1.0"
"$venv/bin/python" -c "import pipecat, uvicorn, msgpack; print('pipecat peer ready:', pipecat.__version__ if hasattr(pipecat, '__version__') else 'ok')" 2>/dev/null | tail -1
echo "python: $venv/bin/python"
