#!/usr/bin/env bash
# The whole test suite: installs nats-server and Prometheus if absent, then runs every crate's tests
# (dependencies are built optimised, see [profile.dev.package."*"] in Cargo.toml).
# Dataset-backed tests read ../shared/datasets beside the repository (or $GRAIL_DATASETS);
# they fail, not skip, when the data is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-nats.sh >/dev/null
scripts/install-prometheus.sh >/dev/null
if [ -z "${GRAIL_DATASETS:-}" ]; then
    for d in ../shared/datasets /work/shared/datasets; do
        if [ -d "$d" ]; then
            GRAIL_DATASETS="$(cd "$d" && pwd)"
            export GRAIL_DATASETS
            break
        fi
    done
fi
echo "datasets: ${GRAIL_DATASETS:-not found (dataset-backed tests will fail; set GRAIL_DATASETS)}" >&2
cargo test --workspace --locked "$@"
# Across hosts (network namespaces: needs root, as CI has; ~1 min). Ignored in the run above
# so that a plain `cargo test` works unprivileged; it fails, not skips, without root.
if [ "${GRAIL_SKIP_MULTI_HOST:-}" = 1 ]; then
    echo "multi-host test NOT RUN (GRAIL_SKIP_MULTI_HOST=1)" >&2
else
    cargo test --locked -p grail-runtime --test multi_host -- --ignored
fi
