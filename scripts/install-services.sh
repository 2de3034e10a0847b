#!/usr/bin/env bash
# Install what the scale-out tests need (idempotent): Debian's redis-server. The tests
# start their own redis-server on a loopback port in a temporary directory and stop it
# by PID; no system service is used or left running. Without it those tests skip,
# saying why.
set -euo pipefail

if ! command -v redis-server >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends redis-server
fi
# The package may start a system service; the tests do not need it.
redis-server --version
