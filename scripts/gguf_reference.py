#!/usr/bin/env python3
"""Independent GGUF dequantisation reference (llama.cpp's `gguf` PyPI package + numpy).

Usage: gguf_reference.py FILE.gguf OUT_DIR [TENSOR_NAME ...]

For each named tensor (all tensors when none are named) writes OUT_DIR/<name>.f32: the
dequantised values as raw little-endian float32 in ggml row-major order (numpy shape =
reversed GGUF dims), and prints one JSON line {"name", "type", "shape"} per tensor.
Used by policy/tests/gguf_reference.rs; needs `pip install gguf numpy`.
"""
import json
import os
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    path, out_dir, wanted = sys.argv[1], sys.argv[2], set(sys.argv[3:])
    os.makedirs(out_dir, exist_ok=True)
    reader = GGUFReader(path)
    for tensor in reader.tensors:
        if wanted and tensor.name not in wanted:
            continue
        values = dequantize(tensor.data, tensor.tensor_type).astype("<f4", copy=False)
        values.tofile(os.path.join(out_dir, tensor.name + ".f32"))
        print(json.dumps({
            "name": tensor.name,
            "type": tensor.tensor_type.name,
            "shape": list(np.shape(values)),
        }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
