#!/usr/bin/python3
"""Load a `modcoord export` directory into a PyTorch module.

`modcoord export --checkpoint CKPT --out DIR` writes DIR/model.safetensors
(named float32 tensors) and DIR/config.json (the architecture). This module
rebuilds the same Mixture-of-Depths transformer as mod/ in torch.nn and
loads the weights; its state_dict keys are exactly the tensor names in the
file (see docs/checkpoints.md, "Exporting to PyTorch").

As a library (needs torch; Debian: apt-get install python3-torch, then use
/usr/bin/python3):

    import modcoord_torch
    model = modcoord_torch.load("DIR")           # eval mode, float32
    logits = model(tokens)                       # tokens [B, seq_len] int64
    logits = model(tokens, routing="causal")     # as sampling routes, any length

From the command line (prints JSON: logits [B, T, V] and the selected
positions of every routed layer):

    /usr/bin/python3 tools/modcoord_torch.py DIR --tokens '[[1, 2, 3, ...]]'
        [--routing topk|causal] [--dtype float32|float64]

Architecture (as mod/ computes it; mod/layer.go is the reference):
  * x = tok_emb[tokens] (+ pos_emb[positions] with learned positions).
  * pre-norm blocks: h = x + attn(rmsnorm(x)); f = attn + mlp(rmsnorm(h)).
    A dense layer outputs x + f.
  * rmsnorm(u) = u / sqrt(mean(u^2) + eps) * weight; no bias.
  * attention: qkv = u @ wqkv, columns q | k | v, head h in columns
    h*hd .. (h+1)*hd of each; RoPE rotate-half (pairs j, j + hd/2,
    theta^(-2j/hd)) on q and k by each token's original position; causal
    softmax(q k^T / sqrt(hd)); merged heads @ wo.
  * mlp(u) = gelu_tanh(u @ w1) @ w2 (GELU, tanh approximation).
  * routed layer: z = x @ router. Top-k routing (training): the k = top_k
    tokens of each sequence with the highest z, ties to the earlier
    position, processed in their original order under the causal mask
    among themselves, at their original positions; output x + sigmoid(z) * f
    for them, x for the others. Causal routing (sampling): a token is
    processed when its decision logit is > 0 (z in aux-loss mode, the
    predictor gelu_tanh(x @ w1 + b1) @ w2 + b2 in predictor mode).
  * logits = rmsnorm(x; norm_f) @ lm_head. Embeddings are not tied.
  * matrices are [in, out]: y = x @ W (the transpose of nn.Linear.weight).
"""

import argparse
import json
import math
import os
import struct
import sys

import torch
import torch.nn as nn

FORMAT_NAME = "modcoord.export"
FORMAT_VERSION = 1
MAX_HEADER_BYTES = 100 << 20  # what safetensors readers accept
MAX_CONFIG_BYTES = 1 << 20


class ExportError(Exception):
    pass


# ------------------------------------------------------------ reading ---

def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ExportError("duplicate JSON key %r" % k)
        out[k] = v
    return out


def read_safetensors(path):
    """Read a safetensors file of F32 tensors: (metadata, {name: tensor}).

    A small reader instead of the safetensors package, which Debian does not
    ship; the format is an 8-byte little-endian header length, a JSON header,
    then the data. Offsets must tile the data section exactly."""
    if sys.byteorder != "little":
        raise ExportError("this reader assumes a little-endian machine, as safetensors data is")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ExportError("%s: %d bytes, too short for safetensors" % (path, size))
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES or n > size - 8:
            raise ExportError("%s: header length %d impossible for a %d-byte file" % (path, n, size))
        try:
            header = json.loads(f.read(n).decode("utf-8"), object_pairs_hook=_no_duplicates)
        except (UnicodeDecodeError, ValueError) as e:
            raise ExportError("%s: header is not valid JSON: %s" % (path, e))
        if not isinstance(header, dict):
            raise ExportError("%s: header is not a JSON object" % path)
        meta = header.pop("__metadata__", {}) or {}
        spans = []
        for name, t in header.items():
            if not isinstance(t, dict) or t.get("dtype") != "F32":
                raise ExportError("%s: tensor %s is %r, want dtype F32" % (path, name, t))
            shape, (b, e) = t["shape"], t["data_offsets"]
            if e - b != 4 * math.prod(shape):
                raise ExportError("%s: tensor %s: offsets [%d,%d) do not fit shape %s" % (path, name, b, e, shape))
            spans.append((b, e, name, shape))
        spans.sort()
        pos = 0
        for b, e, name, _ in spans:
            if b != pos:
                raise ExportError("%s: tensor %s starts at %d, want %d (hole or overlap)" % (path, name, b, pos))
            pos = e
        if 8 + n + pos != size:
            raise ExportError("%s: file is %d bytes, header describes %d" % (path, size, 8 + n + pos))
        data = bytearray(f.read(pos))
    tensors = {}
    for b, e, name, shape in spans:
        t = torch.frombuffer(data, dtype=torch.float32, count=(e - b) // 4, offset=b) if e > b \
            else torch.empty(0, dtype=torch.float32)
        tensors[name] = t.reshape(shape).clone()
    return meta, tensors


def read_config(path):
    if os.path.getsize(path) > MAX_CONFIG_BYTES:
        raise ExportError("%s: over %d bytes, not an export config" % (path, MAX_CONFIG_BYTES))
    with open(path) as f:
        cfg = json.load(f, object_pairs_hook=_no_duplicates)
    if cfg.get("format") != FORMAT_NAME or cfg.get("format_version") != FORMAT_VERSION:
        raise ExportError("%s: format %r version %r; this loader reads %s version %d"
                          % (path, cfg.get("format"), cfg.get("format_version"), FORMAT_NAME, FORMAT_VERSION))
    for key, want in (("activation", "gelu_tanh"), ("norm", "rmsnorm"), ("tied_embeddings", False)):
        if cfg.get(key) != want:
            raise ExportError("%s: %s is %r; this loader implements %r" % (path, key, cfg.get(key), want))
    return cfg


# -------------------------------------------------------------- model ---

def gelu_tanh(x):
    return torch.nn.functional.gelu(x, approximate="tanh")


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, u):
        return u / torch.sqrt((u * u).mean(dim=-1, keepdim=True) + self.eps) * self.weight


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg["d_model"]
        self.heads, self.rope_theta = cfg["heads"], cfg["rope_theta"]
        self.rope = cfg["positions"] == "rope"
        self.wqkv = nn.Parameter(torch.zeros(d, 3 * d))
        self.wo = nn.Parameter(torch.zeros(d, d))

    def _rotate(self, x, pos):
        """RoPE rotate-half on x [S,H,hd] at integer positions pos [S].
        The angles are computed in float64, as mod's tables are."""
        hd = x.shape[-1]
        half = hd // 2
        inv = torch.tensor([self.rope_theta ** (-(2.0 * j) / hd) for j in range(half)], dtype=torch.float64)
        ang = pos.to(torch.float64)[:, None, None] * inv  # [S,1,half]
        cos, sin = torch.cos(ang).to(x.dtype), torch.sin(ang).to(x.dtype)
        a, b = x[..., :half], x[..., half:]
        return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)

    def forward(self, u, pos):
        """u [S,D] (one sequence's processed tokens, in order), pos [S]."""
        S, D = u.shape
        H = self.heads
        hd = D // H
        qkv = u @ self.wqkv
        q, k, v = (qkv[:, i * D:(i + 1) * D].reshape(S, H, hd) for i in range(3))
        if self.rope:
            q, k = self._rotate(q, pos), self._rotate(k, pos)
        q, k, v = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)  # [H,S,hd]
        s = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(hd))
        mask = torch.ones(S, S, dtype=torch.bool).triu(1)
        o = torch.softmax(s.masked_fill(mask, float("-inf")), dim=-1) @ v
        return o.transpose(0, 1).reshape(S, D) @ self.wo


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, f = cfg["d_model"], cfg["mlp_hidden"]
        self.w1 = nn.Parameter(torch.zeros(d, f))
        self.w2 = nn.Parameter(torch.zeros(f, d))

    def forward(self, u):
        return gelu_tanh(u @ self.w1) @ self.w2


class Predictor(nn.Module):
    """The causal-decision MLP of predictor mode (trained on stop-gradient
    inputs; used only by causal routing)."""

    def __init__(self, cfg):
        super().__init__()
        d, p = cfg["d_model"], cfg["predictor_hidden"]
        self.w1 = nn.Parameter(torch.zeros(d, p))
        self.b1 = nn.Parameter(torch.zeros(p))
        self.w2 = nn.Parameter(torch.zeros(p))
        self.b2 = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return gelu_tanh(x @ self.w1 + self.b1) @ self.w2 + self.b2


class Block(nn.Module):
    def __init__(self, cfg, routed):
        super().__init__()
        d, eps = cfg["d_model"], cfg["norm_eps"]
        self.attn_norm = RMSNorm(d, eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(d, eps)
        self.mlp = MLP(cfg)
        self.routed = routed
        self.top_k = cfg["top_k"]
        if routed:
            self.router = nn.Parameter(torch.zeros(d))
            if cfg["decision"] == "predictor":
                self.predictor = Predictor(cfg)

    def residual_delta(self, xs, pos):
        """f = attn + mlp on the processed tokens xs [S,D] at positions pos."""
        a = self.attn(self.attn_norm(xs), pos)
        return a + self.mlp(self.mlp_norm(xs + a))

    def select(self, x, z, routing):
        """Positions (ascending) this layer processes in one sequence."""
        T = x.shape[0]
        if routing == "topk":
            # Stable sort on -z: ties go to the earlier position, as in mod.
            order = torch.sort(-z, stable=True).indices[:self.top_k]
            return torch.sort(order).values
        decision = self.predictor(x) if hasattr(self, "predictor") else z
        return torch.nonzero(decision > 0).flatten()

    def forward(self, x, routing, selected=None):
        """x [B,T,D] -> [B,T,D]; appends each row's selection to selected."""
        B, T, _ = x.shape
        if not self.routed:
            pos = torch.arange(T)
            return torch.stack([x[b] + self.residual_delta(x[b], pos) for b in range(B)])
        out = x.clone()
        z = x @ self.router  # [B,T]
        for b in range(B):
            sel = self.select(x[b], z[b], routing)
            if selected is not None:
                selected.append(sel.tolist())
            if len(sel) == 0:
                continue
            xs = x[b, sel]
            out[b, sel] = xs + torch.sigmoid(z[b, sel])[:, None] * self.residual_delta(xs, sel)
        return out


class ModTransformer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        d = cfg["d_model"]
        self.tok_emb = nn.Embedding(cfg["vocab"], d)
        if cfg["positions"] == "learned":
            self.pos_emb = nn.Embedding(cfg["seq_len"], d)
        routed = set(cfg["routed_layers"])
        self.layers = nn.ModuleList(Block(cfg, i in routed) for i in range(cfg["layers"]))
        self.norm_f = RMSNorm(d, cfg["norm_eps"])
        self.lm_head = nn.Parameter(torch.zeros(d, cfg["vocab"]))

    def forward(self, tokens, routing="topk", selected=None):
        """tokens [B,T] (T = seq_len for top-k routing, <= seq_len for
        causal) -> logits [B,T,V]. selected, if a list, receives one list per
        routed layer of each row's processed positions."""
        if routing not in ("topk", "causal"):
            raise ExportError("routing %r: use 'topk' or 'causal'" % routing)
        T = tokens.shape[1]
        if T > self.cfg["seq_len"]:
            raise ExportError("%d tokens; the model's context is %d" % (T, self.cfg["seq_len"]))
        if routing == "topk" and self.cfg["routed_layers"] and T != self.cfg["seq_len"]:
            # k = top_k is a fraction of the training length; over a shorter
            # input it would route another share of the tokens than trained.
            raise ExportError("top-k routing needs exactly seq_len = %d tokens, as in training, got %d; "
                              "use routing='causal' for other lengths" % (self.cfg["seq_len"], T))
        x = self.tok_emb(tokens)
        if hasattr(self, "pos_emb"):
            x = x + self.pos_emb(torch.arange(T))[None]
        for layer in self.layers:
            sel = [] if layer.routed else None
            x = layer(x, routing, sel)
            if sel is not None and selected is not None:
                selected.append(sel)
        return self.norm_f(x) @ self.lm_head


def load(path, dtype=torch.float32):
    """Build the model described by path/config.json and load
    path/model.safetensors into it (strictly: every tensor, right shapes)."""
    cfg = read_config(os.path.join(path, "config.json"))
    _, tensors = read_safetensors(os.path.join(path, "model.safetensors"))
    model = ModTransformer(cfg)
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if want != got:
        missing = sorted(set(want) - set(got))
        extra = sorted(set(got) - set(want))
        shapes = sorted(k for k in set(want) & set(got) if want[k] != got[k])
        raise ExportError("%s: tensors do not match config.json: missing %s, unexpected %s, wrong shape %s"
                          % (path, missing, extra, shapes))
    model.load_state_dict(tensors, strict=True)
    return model.to(dtype).eval()


# ---------------------------------------------------------------- CLI ---

def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", help="directory written by `modcoord export`")
    ap.add_argument("--tokens", required=True, help="JSON list of token lists, e.g. '[[1,2,3]]'")
    ap.add_argument("--routing", default="topk", choices=("topk", "causal"))
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    try:
        model = load(args.dir, getattr(torch, args.dtype))
        tokens = torch.tensor(json.loads(args.tokens), dtype=torch.long)
        if tokens.dim() != 2:
            raise ExportError("--tokens must be a list of token lists")
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= model.cfg["vocab"]):
            raise ExportError("--tokens: ids must be in [0, %d)" % model.cfg["vocab"])
        selected = []
        with torch.no_grad():
            logits = model(tokens, routing=args.routing, selected=selected)
    except (ExportError, OSError, KeyError, TypeError, ValueError, RuntimeError) as e:
        print("modcoord_torch: %s" % e, file=sys.stderr)
        return 1
    json.dump({"shape": list(logits.shape), "logits": logits.flatten().tolist(), "selected": selected}, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
