#!/usr/bin/env bash
# Install what tests/test_browser_page.py needs (idempotent): Debian's chromium, and the
# playwright Python package in .venv, used only as a driver for /usr/bin/chromium
# (`playwright install` is never run; its browser download is not needed).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium
fi

if [ ! -x .venv/bin/python ]; then
  BASE="${PYTHON:-python3.11}"
  command -v "$BASE" >/dev/null 2>&1 || BASE=python3
  "$BASE" -m venv .venv
fi
PY=.venv/bin/python
if ! "$PY" -c "import playwright.sync_api" >/dev/null 2>&1; then
  "$PY" -m pip install -q "playwright>=1.45"
fi
/usr/bin/chromium --version 2>/dev/null
