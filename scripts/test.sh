#!/usr/bin/env bash
# The whole test suite: installs nats-server if absent, then runs every crate's tests
# (dependencies are built optimised, see [profile.dev.package."*"] in Cargo.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-nats.sh >/dev/null
cargo test --workspace --locked "$@"
