#!/usr/bin/env bash
# Check issue 14 by hand: the original TypeScript Vantum's React frontend, built
# unmodified from its repository with only VITE_WS_URL set, holds a spoken
# conversation with `vantum serve` (against the fake providers) in headless Chromium.
#
#   scripts/check-original-frontend.sh [WORKDIR]
#
# Needs node + npm, git and network access to GitHub and the npm registry, and
# scripts/install-browser.sh (chromium, playwright). The frontend depends on
# @Jatin5120/vantum-shared from GitHub's package registry, which wants a login; it
# is built from its own repository instead and installed from the local tarball.
# Nothing is copied into this repository.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${1:-$(mktemp -d)}"
PY="$ROOT/.venv/bin/python"
VANTUM="$ROOT/.venv/bin/vantum"
PORT="${PORT:-8765}"
PAGE_PORT="${PAGE_PORT:-5173}"
mkdir -p "$WORK" && cd "$WORK"

[ -d shared ] || git clone -q https://github.com/Jatin5120/vantum-shared shared
[ -d frontend ] || git clone -q https://github.com/Jatin5120/vantum-frontend frontend
(cd shared && npm install --no-audit --no-fund -q && npx tsc && npm pack -q >/dev/null)
# The frontend's .npmrc names ${GITHUB_TOKEN}; the registry it points at is not used.
(cd frontend && GITHUB_TOKEN="${GITHUB_TOKEN:-unused}" npm install --no-save --no-audit \
  --no-fund -q "$WORK"/shared/Jatin5120-vantum-shared-*.tgz)

export VANTUM_AUTH_SECRET VANTUM_TOKEN_MAX_TTL_S=2592000  # 30-day tokens allowed
VANTUM_AUTH_SECRET="$("$PY" -c 'import secrets; print(secrets.token_urlsafe(32))')"
TOKEN="$("$VANTUM" token --ttl 30d --subject frontend)"
(cd frontend && VITE_WS_URL="ws://127.0.0.1:$PORT/voicechat/ws?token=$TOKEN" npm run -s build)

pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
"$VANTUM" fakes >fakes.log 2>&1 &
pids+=($!)
until grep -q CARTESIA_URL fakes.log; do sleep 0.2; done
eval "$(grep export fakes.log)"
VANTUM_RECORDS_URL="sqlite:///$WORK/calls.db" "$VANTUM" serve --port "$PORT" \
  --allowed-origin "http://127.0.0.1:$PAGE_PORT" >serve.log 2>&1 &
pids+=($!)
"$PY" -m http.server "$PAGE_PORT" --bind 127.0.0.1 -d frontend/dist >page.log 2>&1 &
pids+=($!)
until curl -sf "http://127.0.0.1:$PORT/health" >/dev/null; do sleep 0.2; done
until curl -sf "http://127.0.0.1:$PAGE_PORT/" >/dev/null; do sleep 0.2; done
"$PY" "$ROOT/scripts/original_frontend_check.py" "http://127.0.0.1:$PAGE_PORT/" "${TURNS:-3}"
