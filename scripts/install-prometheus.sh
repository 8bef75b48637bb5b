#!/usr/bin/env bash
# Installs Prometheus 2.42 (Debian's `prometheus` package: a Go binary that needs only libc)
# into the project-local .tools/prometheus/, where the live dashboard test
# (runtime/tests/dashboard_live.rs) finds it. Only the Debian package registry is needed:
# `apt-get download` fetches the .deb without installing it, `dpkg-deb -x` unpacks it.
# Idempotent: does nothing when the binary is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.tools/prometheus
if [ -x "$dest/prometheus" ] && "$dest/prometheus" --version 2>/dev/null | grep -q "version 2\."; then
  exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# apt-get download runs as the invoking user; root's download drops to `_apt`, which cannot
# write into a private mktemp dir, so let it write to a world-writable one.
chmod 0777 "$tmp"
fetch() { (cd "$tmp" && apt-get download -q prometheus >/dev/null 2>&1); }
if ! fetch; then
  # A clean machine (CI container) has no package lists yet: refresh them once, as root.
  if [ "$(id -u)" = 0 ]; then
    apt-get update -q >/dev/null
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo apt-get update -q >/dev/null
  else
    echo "install-prometheus: 'apt-get download prometheus' failed and the package lists cannot be refreshed without root; run 'sudo apt-get update' and retry" >&2
    exit 1
  fi
  fetch || { echo "install-prometheus: 'apt-get download prometheus' failed after apt-get update (is the Debian registry reachable?)" >&2; exit 1; }
fi
dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"
mkdir -p "$dest"
install -m 0755 "$tmp/x/usr/bin/prometheus" "$dest/prometheus"
"$dest/prometheus" --version 2>&1 | head -1
