#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev]"
# The browser page test drives Debian's Chromium; without it that test is skipped.
bash scripts/install-browser.sh || echo "warning: Chromium not installed; the browser test will skip"
exec .venv/bin/python -m pytest -q "$@"
