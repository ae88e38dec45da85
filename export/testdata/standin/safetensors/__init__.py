"""Test stand-in for the safetensors package (not installable on the
development machines): safe_open with metadata(), keys() and get_tensor(),
enough to run the snippets of docs/checkpoints.md. Only F32 tensors."""

import json
import struct

import numpy as np


class safe_open:  # noqa: N801 (the package's name)
    def __init__(self, path, framework="np"):
        if framework not in ("np", "numpy"):
            raise ValueError("stand-in supports framework='np' only")
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > 100 << 20:
                raise ValueError("header too large")
            header = json.loads(f.read(n))
            self._data = f.read()
        self._meta = header.pop("__metadata__", None)
        self._header = header

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def metadata(self):
        return self._meta

    def keys(self):
        return sorted(self._header)

    def get_tensor(self, name):
        t = self._header[name]
        if t["dtype"] != "F32":
            raise ValueError("stand-in reads F32 only")
        b, e = t["data_offsets"]
        return np.frombuffer(self._data[b:e], dtype="<f4").reshape(t["shape"]).copy()
