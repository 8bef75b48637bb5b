#!/usr/bin/env bash
# Fresh machine → running local cluster: installs nats-server (project-local .venv), builds
# `grail` (release) and runs every role of cluster.toml in one process. Extra arguments go to
# `grail up` (e.g. `scripts/up.sh --windows 20`). Ctrl-C stops everything, nats-server included.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-nats.sh >/dev/null
cargo build --release --locked -p grail-runtime --bin grail
exec target/release/grail up --config cluster.toml "$@"
