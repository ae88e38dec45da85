#!/usr/bin/python3
"""Independent float64 PyTorch reference for the modcoord MoD transformer.

Writes testdata/mod_reference.json: golden forward values (loss, CE, per-layer
router BCE, top-k selections, logits checksum) and d loss / d params for a few
small configs, all in float64 with torch autograd. The Go model (mod/) is
tested against this file.

Usage (from the repository root; needs Debian's python3-torch, so use the
system interpreter, not the pyenv `python3`):

    /usr/bin/python3 tools/torch_reference.py            # write testdata/mod_reference.json
    /usr/bin/python3 tools/torch_reference.py --out F    # write elsewhere
    /usr/bin/python3 tools/torch_reference.py --no-check # skip the self-checks (faster)
    /usr/bin/python3 tools/torch_reference.py --fd-coords 4  # FD coordinates per tensor

The run is deterministic: the same torch build gives a byte-identical file
(single-threaded, fixed seeds, floats written with Python's shortest
round-trip repr, so every float64 in the file parses back exactly).

Self-checks (printed, and the script exits 1 if one fails):
  (a) autograd gradient vs a 4-point central finite difference
      (f(x-2h) - 8 f(x-h) + 8 f(x+h) - f(x+2h)) / 12h, h = 1e-4, on random
      coordinates of every parameter tensor, relative error < 1e-6
      (coordinates where both values are below 1e-10, e.g. embedding rows of
      token ids absent from the batch, are counted, not ratioed). The
      top-k selection is asserted unchanged at every perturbed point. For the
      predictor case the predictor's input is held at its unperturbed value
      during FD, which is exactly what the stop-gradient means.
  (b) case rope_aux_c1 (C = 1, every layer routed) with r forced to 1 must
      equal the dense model with the same weights (routing/compaction is then
      the identity).
  (c) the top-k selection of every routed layer is checked against an
      independent torch.topk-based selection.

Model conventions (exactly as specified for mod/; see the report in the PR):
  * flat parameter vector in the order tok_emb, [pos_emb], per layer ln1,
    wqkv, wo, ln2, w1, w2, [router, [pred_w1, pred_b1, pred_w2, pred_b2]],
    ln_f, lm_head; matrices [in, out] row-major, y = x @ W.
  * RMSNorm(u; w) = u / sqrt(mean(u^2) + eps) * w.
  * RoPE rotate-half (GPT-NeoX): pairs (j, j + hd/2), inv_freq_j =
    theta^(-2j/hd); routed layers use the tokens' original positions.
  * gelu is the tanh approximation.
  * routed layer: z = x @ router; k = floor(C*T); top-k by (-z, index), then
    sorted ascending; x[sel] = xs + sigmoid(z[sel]) * (a + m).
  * aux-loss: BCE-with-logits(z, top-k membership), mean over B*T.
  * predictor: BCE-with-logits(gelu(x.detach() @ pw1 + pb1) @ pw2 + pb2, t).
  * loss = CE(mean over B*T) + aux_loss_weight * sum over routed layers of BCE.
"""

import argparse
import json
import math
import os
import random
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

torch.set_num_threads(1)
DT = torch.float64


# ---------------------------------------------------------------- config ---

def top_k_count(cfg):
    """floor(C*T), guarded against C*T landing a hair under an integer
    (same rule as mod.Config.TopK)."""
    ct = cfg["capacity"] * cfg["seq_len"]
    k = int(math.floor(ct))
    if k + 1 <= ct + 1e-9:
        k += 1
    return k


def layout(cfg):
    V, D, T = cfg["vocab"], cfg["d_model"], cfg["seq_len"]
    Fh, P = cfg["mlp_hidden"], cfg["predictor_hidden"]
    out = []
    off = 0

    def add(name, *shape):
        nonlocal off
        out.append({"name": name, "shape": list(shape), "offset": off})
        off += math.prod(shape)

    add("tok_emb", V, D)
    if cfg["positions"] == "learned":
        add("pos_emb", T, D)
    for l in range(cfg["layers"]):
        p = "layer%d." % l
        add(p + "ln1", D)
        add(p + "wqkv", D, 3 * D)
        add(p + "wo", D, D)
        add(p + "ln2", D)
        add(p + "w1", D, Fh)
        add(p + "w2", Fh, D)
        if l in cfg["routed_layers"]:
            add(p + "router", D)
            if cfg["decision"] == "predictor":
                add(p + "pred_w1", D, P)
                add(p + "pred_b1", P)
                add(p + "pred_w2", P)
                add(p + "pred_b2", 1)
    add("ln_f", D)
    add("lm_head", D, V)
    return out, off


def unflatten(flat, lay):
    return {t["name"]: flat[t["offset"]:t["offset"] + math.prod(t["shape"])].view(*t["shape"])
            for t in lay}


# ----------------------------------------------------------------- model ---

def gelu_tanh(x):
    # Written out rather than F.gelu(approximate='tanh') so the formula is
    # explicit; the two agree to rounding (checked in main).
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def rmsnorm(u, w, eps):
    return u / torch.sqrt((u * u).mean(dim=-1, keepdim=True) + eps) * w


def rope(x, pos, theta):
    """x [B,H,S,hd], pos [B,S] integer positions. Rotate-half convention."""
    hd = x.shape[-1]
    half = hd // 2
    inv_freq = torch.tensor([theta ** (-(2.0 * j) / hd) for j in range(half)], dtype=DT)
    ang = pos.to(DT)[:, None, :, None] * inv_freq  # [B,1,S,half]
    cos, sin = torch.cos(ang), torch.sin(ang)
    a, b = x[..., :half], x[..., half:]
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)


def attention(u, pos, W, p, cfg):
    B, S, D = u.shape
    H = cfg["heads"]
    hd = D // H
    qkv = u @ W[p + "wqkv"]
    q, k, v = qkv[..., :D], qkv[..., D:2 * D], qkv[..., 2 * D:]

    def heads(t):  # [B,S,D] -> [B,H,S,hd]; head h = columns h*hd..(h+1)*hd-1
        return t.reshape(B, S, H, hd).transpose(1, 2)

    q, k, v = heads(q), heads(k), heads(v)
    if cfg["positions"] == "rope":
        q = rope(q, pos, cfg["rope_theta"])
        k = rope(k, pos, cfg["rope_theta"])
    s = q @ k.transpose(-1, -2) / math.sqrt(hd)
    mask = torch.ones(S, S, dtype=torch.bool).triu(1)  # key j > query i
    s = s.masked_fill(mask, float("-inf"))
    o = torch.softmax(s, dim=-1) @ v  # [B,H,S,hd]
    o = o.transpose(1, 2).reshape(B, S, D)
    return o @ W[p + "wo"]


def mlp(u, W, p):
    return gelu_tanh(u @ W[p + "w1"]) @ W[p + "w2"]


def select_topk(z, k):
    """z [B,T] -> list over b of sorted selected indices (Python ints), and
    the smallest gap between the k-th and (k+1)-th largest logit."""
    sels, gap = [], math.inf
    for row in z.detach().tolist():
        order = sorted(range(len(row)), key=lambda i: (-row[i], i))
        if k < len(row):
            gap = min(gap, row[order[k - 1]] - row[order[k]])
        sels.append(sorted(order[:k]))
    return sels, gap


def forward(flat, cfg, tokens, targets, force_r_one=False, pred_inputs=None):
    """Returns a dict with loss, ce, bce list, selected, logits, min gap and
    the predictor inputs used (for FD with stop-gradient)."""
    lay, _ = layout(cfg)
    W = unflatten(flat, lay)
    B, T = tokens.shape
    eps = cfg["norm_eps"]
    x = W["tok_emb"][tokens]
    if cfg["positions"] == "learned":
        x = x + W["pos_emb"][torch.arange(T)][None]
    full_pos = torch.arange(T)[None].expand(B, T)
    bces, selected, gaps, pin_used = [], [], [], []
    k = top_k_count(cfg)
    for l in range(cfg["layers"]):
        p = "layer%d." % l
        if l not in cfg["routed_layers"]:
            a = attention(rmsnorm(x, W[p + "ln1"], eps), full_pos, W, p, cfg)
            h = x + a
            x = h + mlp(rmsnorm(h, W[p + "ln2"], eps), W, p)
            continue
        z = x @ W[p + "router"]  # [B,T]
        sel, gap = select_topk(z, k)
        selected.append(sel)
        gaps.append(gap)
        sel_t = torch.tensor(sel, dtype=torch.long)  # [B,k]
        bidx = torch.arange(B)[:, None].expand(B, k)
        target = torch.zeros(B, T, dtype=DT)
        target[bidx, sel_t] = 1.0
        # decision loss on the layer input x (before the update)
        if cfg["decision"] == "aux-loss":
            bces.append(F.binary_cross_entropy_with_logits(z, target))
        else:
            xin = x.detach() if pred_inputs is None else pred_inputs[len(pin_used)]
            pin_used.append(xin)
            pl = gelu_tanh(xin @ W[p + "pred_w1"] + W[p + "pred_b1"]) @ W[p + "pred_w2"] + W[p + "pred_b2"]
            bces.append(F.binary_cross_entropy_with_logits(pl, target))
        xs = x[bidx, sel_t]  # [B,k,D]
        a = attention(rmsnorm(xs, W[p + "ln1"], eps), sel_t, W, p, cfg)
        hs = xs + a
        f = a + mlp(rmsnorm(hs, W[p + "ln2"], eps), W, p)
        r = torch.sigmoid(z[bidx, sel_t])
        if force_r_one:
            r = torch.ones_like(r)
        x = x.clone()
        x[bidx, sel_t] = xs + r[..., None] * f
    logits = rmsnorm(x, W["ln_f"], eps) @ W["lm_head"]
    ce = F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(B * T))
    loss = ce
    for b in bces:
        loss = loss + cfg["aux_loss_weight"] * b
    return {"loss": loss, "ce": ce, "bce": bces, "selected": selected,
            "logits": logits, "gaps": gaps, "pred_inputs": pin_used}


# ---------------------------------------------------------------- cases ----

BASE = {"vocab": 32, "d_model": 16, "layers": 4, "heads": 2, "seq_len": 16,
        "mlp_hidden": 32, "routed_layers": [1, 3], "capacity": 0.25,
        "decision": "aux-loss", "aux_loss_weight": 0.1, "predictor_hidden": 8,
        "positions": "rope", "rope_theta": 10000.0, "norm_eps": 1e-5}

CASES = [
    ("rope_aux", dict(BASE), 3, 1001),
    ("learned_predictor", dict(BASE, positions="learned", decision="predictor",
                               routed_layers=[1, 2], capacity=0.5), 2, 2002),
    ("dense", dict(BASE, routed_layers=[]), 2, 3003),
    ("rope_aux_c1", dict(BASE, routed_layers=[0, 1, 2, 3], capacity=1.0), 2, 4004),
]

MIN_GAP = 1e-3


def init_std(name):
    """(mean, std) of each tensor's normal draw."""
    leaf = name.split(".")[-1]
    if leaf in ("tok_emb", "pos_emb"):
        return 0.0, 0.5
    if leaf in ("ln1", "ln2", "ln_f"):
        return 1.0, 0.1
    if leaf == "router":
        return 0.0, 0.5
    if leaf in ("pred_b1", "pred_b2"):
        return 0.0, 0.1
    return 0.0, 0.3  # wqkv, wo, w1, w2, lm_head, pred_w1, pred_w2


def draw(cfg, B, seed):
    lay, total = layout(cfg)
    g = torch.Generator().manual_seed(seed)
    flat = torch.empty(total, dtype=DT)
    for t in lay:
        n = math.prod(t["shape"])
        mean, std = init_std(t["name"])
        flat[t["offset"]:t["offset"] + n] = mean + std * torch.randn(n, generator=g, dtype=DT)
    tokens = torch.randint(cfg["vocab"], (B, cfg["seq_len"]), generator=g)
    targets = torch.randint(cfg["vocab"], (B, cfg["seq_len"]), generator=g)
    return lay, flat, tokens, targets


def build_case(name, cfg, B, seed):
    for attempt in range(100):
        lay, flat, tokens, targets = draw(cfg, B, seed + attempt)
        with torch.no_grad():
            out = forward(flat, cfg, tokens, targets)
        gap = min(out["gaps"], default=math.inf)
        if gap > MIN_GAP:
            return lay, flat, tokens, targets, seed + attempt, gap
        print("  %s: seed %d min top-k gap %.3g <= %g, redrawing" % (name, seed + attempt, gap, MIN_GAP))
    raise SystemExit("could not draw a case without near-ties")


# ------------------------------------------------------------ self-checks --

def fd_check(name, cfg, flat, tokens, targets, base, ad_grad, coords, h=1e-4):
    lay, _ = layout(cfg)
    rng = random.Random("fd:" + name)
    pin = [t.clone() for t in base["pred_inputs"]] or None
    ref_sel = base["selected"]
    worst = (0.0, None)
    ok = True
    zero = 0
    for t in lay:
        n = math.prod(t["shape"])
        picks = rng.sample(range(n), min(coords, n))
        for i in picks:
            j = t["offset"] + i
            vals = []
            for s in (-2, -1, 1, 2):
                f2 = flat.clone()
                f2[j] += s * h
                with torch.no_grad():
                    o = forward(f2, cfg, tokens, targets, pred_inputs=pin)
                if o["selected"] != ref_sel:
                    raise SystemExit("%s: FD perturbation of %s[%d] changed the top-k selection" % (name, t["name"], i))
                vals.append(o["loss"].item())
            fd = (vals[0] - 8 * vals[1] + 8 * vals[2] - vals[3]) / (12 * h)
            ad = ad_grad[j].item()
            denom = max(abs(fd), abs(ad))
            if denom < 1e-10:
                # both zero to FD resolution (e.g. the row of a token id that
                # does not occur in the batch): no relative error to speak of
                zero += 1
                continue
            rel = abs(fd - ad) / denom
            if rel > worst[0]:
                worst = (rel, "%s[%d] ad=%.6e fd=%.6e" % (t["name"], i, ad, fd))
            if rel >= 1e-6:
                ok = False
                print("  FAIL %s %s[%d]: autograd %.10e fd %.10e rel %.3e" % (name, t["name"], i, ad, fd, rel))
    print("  (a) %s: FD vs autograd on %d coords/tensor x %d tensors (%d both ~0): max rel err %.3e (%s) %s"
          % (name, coords, len(lay), zero, worst[0], worst[1], "OK" if ok else "FAIL"))
    return ok, worst[0]


def dense_equivalence_check(cfg, flat, tokens, targets):
    """C = 1 and r forced to 1: a routed layer is then the dense block."""
    lay, _ = layout(cfg)
    W = unflatten(flat, lay)
    dcfg = dict(cfg, routed_layers=[])
    dlay, dtotal = layout(dcfg)
    dflat = torch.empty(dtotal, dtype=DT)
    for t in dlay:
        dflat[t["offset"]:t["offset"] + math.prod(t["shape"])] = W[t["name"]].reshape(-1)
    with torch.no_grad():
        a = forward(flat, cfg, tokens, targets, force_r_one=True)
        d = forward(dflat, dcfg, tokens, targets)
    diff = (a["logits"] - d["logits"]).abs().max().item()
    cediff = abs(a["ce"].item() - d["ce"].item())
    ok = diff < 1e-12 and cediff < 1e-12
    print("  (b) rope_aux_c1 with r:=1 vs dense, same weights: max |logit diff| %.3e, |ce diff| %.3e %s"
          % (diff, cediff, "OK" if ok else "FAIL"))
    return ok, diff


def topk_crosscheck(name, cfg, flat, tokens, targets, out):
    """Re-derive every routed layer's selection with torch.topk on the
    recorded layer inputs (recomputed here by a second forward pass)."""
    k = top_k_count(cfg)
    ok = True
    # Recompute router logits layer by layer with a hook-free replay:
    lay, _ = layout(cfg)
    W = unflatten(flat, lay)
    captured = []
    orig = select_topk

    def spy(z, kk):
        captured.append(z.detach().clone())
        return orig(z, kk)

    globals()["select_topk"] = spy
    try:
        with torch.no_grad():
            forward(flat, cfg, tokens, targets)
    finally:
        globals()["select_topk"] = orig
    for li, z in enumerate(captured):
        idx = torch.topk(z, k, dim=-1, sorted=True).indices.sort(dim=-1).values.tolist()
        if idx != out["selected"][li]:
            ok = False
    print("  (c) %s: torch.topk selection matches on %d routed layers %s" % (name, len(captured), "OK" if ok else "FAIL"))
    return ok


# ------------------------------------------------------------------ main ---

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "testdata", "mod_reference.json"))
    ap.add_argument("--no-check", action="store_true", help="skip the self-checks")
    ap.add_argument("--fd-coords", type=int, default=5, help="FD coordinates per parameter tensor")
    args = ap.parse_args()

    x = torch.linspace(-6, 6, 1001, dtype=DT)
    gerr = (gelu_tanh(x) - F.gelu(x, approximate="tanh")).abs().max().item()
    print("torch %s; gelu_tanh vs F.gelu(approximate='tanh') max diff %.1e" % (torch.__version__, gerr))

    all_ok = True
    max_rel = 0.0
    cases = []
    for name, cfg, B, seed in CASES:
        lay, flat, tokens, targets, used_seed, gap = build_case(name, cfg, B, seed)
        p = flat.clone().requires_grad_(True)
        out = forward(p, cfg, tokens, targets)
        out["loss"].backward()
        grad = p.grad.detach()
        logits = out["logits"].detach()
        print("%s: B=%d seed=%d params=%d loss=%.12f ce=%.12f bce=%s min_topk_gap=%s"
              % (name, B, used_seed, flat.numel(), out["loss"].item(), out["ce"].item(),
                 [round(b.item(), 12) for b in out["bce"]], gap))
        if not args.no_check:
            ok, rel = fd_check(name, cfg, flat, tokens, targets, out, grad, args.fd_coords)
            all_ok &= ok
            max_rel = max(max_rel, rel)
            if cfg["routed_layers"]:
                all_ok &= topk_crosscheck(name, cfg, flat, tokens, targets, out)
            if name == "rope_aux_c1":
                all_ok &= dense_equivalence_check(cfg, flat, tokens, targets)[0]
        cases.append({
            "name": name,
            "config": cfg,
            "batch": B,
            "seed": used_seed,
            "init": "normal: tok_emb/pos_emb std 0.5; wqkv/wo/w1/w2/lm_head/pred_w1/pred_w2 std 0.3; "
                    "ln gains 1+0.1*randn; router std 0.5; pred_b1/pred_b2 0.1*randn",
            "layout": lay,
            "params": flat.tolist(),
            "tokens": tokens.tolist(),
            "targets": targets.tolist(),
            "loss": out["loss"].item(),
            "ce": out["ce"].item(),
            "bce": [b.item() for b in out["bce"]],
            "selected": out["selected"],
            "min_topk_gap": gap if math.isfinite(gap) else None,
            "logits_checksum": logits.sum().item(),
            "logits_abs_sum": logits.abs().sum().item(),
            "logits_first": logits[0, 0].tolist(),
            "grads": grad.tolist(),
        })
    doc = {
        "generator": "tools/torch_reference.py",
        "torch": torch.__version__,
        "dtype": "float64",
        "notes": "min_topk_gap is the smallest (k-th - (k+1)-th largest router logit) over routed layers and "
                 "sequences; null when every token is selected (k = T) or there is no routed layer. "
                 "logits_first = logits[0][0][:].",
        "cases": cases,
    }
    out_path = os.path.normpath(args.out)
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with open(out_path, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print("wrote %s (%d bytes)" % (out_path, os.path.getsize(out_path)))
    if not args.no_check:
        print("self-checks: %s; max FD relative error %.3e" % ("ALL OK" if all_ok else "FAILED", max_rel))
        if not all_ok:
            sys.exit(1)


if __name__ == "__main__":
    main()
