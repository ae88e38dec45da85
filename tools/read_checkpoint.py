#!/usr/bin/env python3
"""Read modcoord checkpoints without Go and without the safetensors package.

A shard file is a plain safetensors file (tensors params, adam_m, adam_v;
dtype F32; see docs/checkpoints.md), so `safetensors.numpy.load_file` reads
it too. This reader needs only the standard library (numpy is used when it
is installed) and checks everything the Go reader checks that matters for
loading: header bounds, tensor offsets, file size and the sha256 of the data.

Usage:
    read_checkpoint.py SHARD.safetensors      summary of one shard
    read_checkpoint.py MANIFEST.json          whole checkpoint: assembles the
                                              flat parameter vector and, if the
                                              config has a "layout" (a list of
                                              {name, shape, offset}), names it
    add --json for a machine-readable summary (sums are float64, summed in
    index order).

As a library:
    meta, tensors = read_shard(path)       # tensors: name -> flat float list/array
    manifest, params, named = read_manifest(path)
"""

import array
import hashlib
import json
import os
import struct
import sys

try:
    import numpy as np
except ImportError:  # the standard library is enough
    np = None

MAX_HEADER_BYTES = 100 << 20
MAX_MANIFEST_BYTES = 64 << 20  # as checkpoint.ReadManifestFile
TENSORS = ("params", "adam_m", "adam_v")


class CheckpointError(Exception):
    pass


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise CheckpointError("duplicate JSON key %r" % k)
        out[k] = v
    return out


def _floats(buf):
    """Little-endian float32 bytes -> numpy array or array('f')."""
    if np is not None:
        return np.frombuffer(buf, dtype="<f4")
    a = array.array("f")
    a.frombytes(buf)
    if sys.byteorder == "big":
        a.byteswap()
    return a


def read_header(path):
    """Return (header dict, data section offset, file size, header sha256)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError("%s: %d bytes, too short (truncated)" % (path, size))
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES or n > size - 8:
            raise CheckpointError("%s: header length %d impossible for a %d-byte file" % (path, n, size))
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as e:
        raise CheckpointError("%s: header is not valid JSON: %s" % (path, e))
    if raw.rstrip(b" ")[-1:] != b"}":
        raise CheckpointError("%s: header padding is not spaces" % path)
    return header, 8 + n, size, hashlib.sha256(head + raw).hexdigest()


def read_shard(path, want_tensors=TENSORS):
    """Validate a shard and return (metadata dict, {name: floats})."""
    header, start, size, _ = read_header(path)
    meta = header.get("__metadata__")
    if not isinstance(meta, dict):
        raise CheckpointError("%s: no __metadata__" % path)
    n = int(meta["hi"]) - int(meta["lo"])
    spans = []
    for name in TENSORS:
        t = header.get(name)
        if t is None:
            raise CheckpointError("%s: no tensor %s" % (path, name))
        b, e = t["data_offsets"]
        if t["dtype"] != "F32" or t["shape"] != [n] or e - b != 4 * n:
            raise CheckpointError("%s: tensor %s is %r, want F32 [%d]" % (path, name, t, n))
        spans.append((b, e, name))
    spans.sort()
    pos = 0
    for b, e, name in spans:
        if b != pos:
            raise CheckpointError("%s: tensor %s starts at %d, want %d (hole or overlap)" % (path, name, b, pos))
        pos = e
    if start + pos != size:
        raise CheckpointError("%s: file is %d bytes, header describes %d (truncated?)" % (path, size, start + pos))
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(pos)
    digest = hashlib.sha256(data).hexdigest()
    if digest != meta["data_sha256"]:
        raise CheckpointError("%s: data sha256 %s, header records %s (corrupt)" % (path, digest, meta["data_sha256"]))
    tensors = {}
    for b, e, name in spans:
        if name in want_tensors:
            tensors[name] = _floats(data[b:e])
    return meta, tensors


def read_manifest(path):
    """Read every shard of a checkpoint; return (manifest, params, named).

    params is the flat parameter vector [0, total); named maps tensor names
    to (shape, flat values) when the config holds a layout.
    """
    if os.path.getsize(path) > MAX_MANIFEST_BYTES:
        raise CheckpointError("%s: over %d bytes, not a manifest" % (path, MAX_MANIFEST_BYTES))
    with open(path) as f:
        manifest = json.load(f, object_pairs_hook=_no_duplicates)
    step_dir = os.path.dirname(os.path.abspath(path))
    total = manifest["total"]
    params = array.array("f", bytes(4 * total)) if np is None else np.zeros(total, dtype="<f4")
    covered = 0
    for sh in manifest["shards"]:
        shard_path = os.path.join(step_dir, sh["file"])
        if os.path.getsize(shard_path) != sh["bytes"]:
            raise CheckpointError("%s: size differs from the manifest" % shard_path)
        if read_header(shard_path)[3] != sh["header_sha256"]:
            raise CheckpointError("%s: header sha256 differs from the manifest" % shard_path)
        meta, tensors = read_shard(shard_path, want_tensors=("params",))
        if meta["data_sha256"] != sh["data_sha256"]:
            raise CheckpointError("%s: data sha256 differs from the manifest" % shard_path)
        lo, hi = sh["lo"], sh["hi"]
        params[lo:hi] = tensors["params"]
        covered += hi - lo
    if covered != total:
        raise CheckpointError("%s: shards cover %d of %d elements" % (path, covered, total))
    return manifest, params, name_tensors(path, manifest.get("config"), params)


def name_tensors(path, config, params):
    """Split the flat vector by the layout in a checkpoint's config.

    The training code (train.CheckpointConfig) records the layout as a list
    of mod.Tensor objects: {"name", "shape", "offset", "decay"}. A config
    without a layout names nothing."""
    named = {}
    layout = config.get("layout") if isinstance(config, dict) else None
    if layout is None:
        return named
    if not isinstance(layout, list):
        raise CheckpointError("%s: config layout is %s, want a list of tensors" % (path, type(layout).__name__))
    for t in layout:
        if not isinstance(t, dict) or not isinstance(t.get("name"), str) or not isinstance(t.get("shape"), list):
            raise CheckpointError("%s: layout entry %r is not a tensor {name, shape, offset}" % (path, t))
        size = 1
        for d in t["shape"]:
            size *= d
        if not (0 <= t["offset"] and t["offset"] + size <= len(params)):
            raise CheckpointError("%s: tensor %s at %d+%d is outside the %d parameters" % (path, t["name"], t["offset"], size, len(params)))
        values = params[t["offset"]:t["offset"] + size]
        if np is not None:
            values = values.reshape(t["shape"])
        named[t["name"]] = (t["shape"], values)
    return named


def _summary(values, shape=None):
    flat = values.ravel().tolist() if np is not None else list(values)
    s = 0.0
    for v in flat:  # index order, float64: the same sum Go computes
        s += v
    return {"shape": shape if shape is not None else [len(flat)], "len": len(flat), "sum": s, "first": flat[:4]}


def main(argv):
    as_json = "--json" in argv
    args = [a for a in argv if a != "--json"]
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    path = args[0]
    try:
        if path.endswith(".json"):
            manifest, params, named = read_manifest(path)
            out = {"job": manifest["job"], "step": manifest["step"], "total": manifest["total"],
                   "params": _summary(params),
                   "named": {k: _summary(v, shape) for k, (shape, v) in named.items()}}
        else:
            meta, tensors = read_shard(path)
            out = {"metadata": meta, "tensors": {k: dict(_summary(v), dtype="F32") for k, v in tensors.items()}}
    except (CheckpointError, OSError, KeyError, TypeError, ValueError) as e:
        print("read_checkpoint: %s" % e, file=sys.stderr)
        return 1
    if as_json:
        json.dump(out, sys.stdout)
        print()
    else:
        for k, v in out.items():
            print("%s: %s" % (k, v))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
