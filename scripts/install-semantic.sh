#!/usr/bin/env bash
# The semantic end of turn's model (docs/turn-taking.md): Smart Turn v3.2, the ONNX
# file shipped in the pipecat-ai 1.14.0 wheel (BSD-2-Clause, 12 MB download,
# 34 MB installed). Installed WITHOUT its dependencies: Vantum reads only the model
# file (it never imports pipecat), and pipecat's declared dependencies (numba,
# openai, Pillow, aiohttp, loguru, ...) would add hundreds of MB for nothing. A pip
# extra cannot say --no-deps, hence this script rather than vantum[semantic].
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="${PIP:-.venv/bin/python -m pip}"
$PIP install -q --no-deps "pipecat-ai==1.14.0"
