"""Stand-in for safetensors.numpy: load_file only."""

from . import safe_open


def load_file(path):
    with safe_open(path, framework="np") as f:
        return {k: f.get_tensor(k) for k in f.keys()}
