#!/usr/bin/env bash
# Install what the scale-out tests need (idempotent): Debian's redis-server and
# postgresql. The tests start their own redis-server / postgres on loopback ports in
# temporary directories and stop them by PID; no system service is used. Without them
# those tests skip, saying why.
set -euo pipefail

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
if [ "${#missing[@]}" -ne 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
redis-server --version
ls -d /usr/lib/postgresql/*/bin
