#!/usr/bin/python3
"""PyTorch CPU benchmark of the modcoord MoD transformer: dense vs MoD.

The same architecture as mod/ and tools/torch_reference.py, written for speed
(float32, batched torch.topk + sort + gather/scatter for routed layers), timed
for one full training step: forward + backward + clip-by-global-norm(1.0) +
torch.optim.AdamW(lr 1e-3, weight_decay 0.1, betas (0.9, 0.99)). Weight decay
applies to matrices and embeddings only (norm gains, router vectors and
predictor biases are not decayed), as mod.Layout's Decay flags say.

Usage (system interpreter, Debian's python3-torch):

    /usr/bin/python3 tools/torch_bench.py                      # default shape, 2 threads
    /usr/bin/python3 tools/torch_bench.py --d-model 128 --layers 4 --seq-len 128 --batch 4 --steps 3
    /usr/bin/python3 tools/torch_bench.py --threads 1
    /usr/bin/python3 tools/torch_bench.py --check              # verify against testdata/mod_reference.json

Default shape: D=512, L=8, H=8, T=512, B=8, V=256, F=2048; MoD with C=0.125
routed on every other layer starting at layer 1, aux-loss decision. Timing:
--warmup (2) untimed steps, then the median of --steps (>= 3) timed steps,
for the dense model and then the MoD model in the same process. Prints one
JSON object: {"threads", "shape", "dense_step_s", "mod_step_s", "speedup", ...}
where speedup = dense_step_s / mod_step_s; every timed step is listed too
(*_times_s), with the minimum (*_min_s, speedup_of_min), which is the
steadier figure when other processes share the cores.

--check runs this implementation in float64 on every golden case of
testdata/mod_reference.json (same flat parameters) and compares loss and
gradients, so the benchmarked model is known to be the reference model.
Top-k ties are broken by torch.topk here (the golden cases have none).

Attention uses F.scaled_dot_product_attention(is_causal=True) when the torch
build has it (>= 2.0), else an explicit masked softmax (torch 1.13 here).
"""

import argparse
import json
import math
import os
import statistics
import sys
import time


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=256)
    ap.add_argument("--d-model", type=int, default=512)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--mlp-hidden", type=int, default=2048)
    ap.add_argument("--capacity", type=float, default=0.125)
    ap.add_argument("--routed", default=None,
                    help="comma-separated routed layer indices (default: 1,3,5,...)")
    ap.add_argument("--decision", default="aux-loss", choices=["aux-loss", "predictor"])
    ap.add_argument("--aux-loss-weight", type=float, default=0.01)
    ap.add_argument("--predictor-hidden", type=int, default=64)
    ap.add_argument("--positions", default="rope", choices=["rope", "learned"])
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--only", choices=["dense", "mod"], default=None, help="time one model only")
    ap.add_argument("--check", action="store_true",
                    help="compare with testdata/mod_reference.json in float64 and exit")
    a = ap.parse_args()
    if a.steps < 3 and not a.check:
        ap.error("--steps must be >= 3")
    return a


ARGS = parse_args()
# Thread counts must be fixed before torch (and OpenBLAS / OpenMP) start.
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

torch.set_num_threads(ARGS.threads)
HAVE_SDPA = hasattr(F, "scaled_dot_product_attention")


def top_k_count(capacity, seq_len):
    ct = capacity * seq_len
    k = int(math.floor(ct))
    if k + 1 <= ct + 1e-9:
        k += 1
    return k


def layout(cfg):
    """Same order as mod.NewLayout; returns [(name, shape, decay)]."""
    V, D, T = cfg["vocab"], cfg["d_model"], cfg["seq_len"]
    Fh, P = cfg["mlp_hidden"], cfg["predictor_hidden"]
    out = [("tok_emb", (V, D), True)]
    if cfg["positions"] == "learned":
        out.append(("pos_emb", (T, D), True))
    for l in range(cfg["layers"]):
        p = "layer%d." % l
        out += [(p + "ln1", (D,), False), (p + "wqkv", (D, 3 * D), True), (p + "wo", (D, D), True),
                (p + "ln2", (D,), False), (p + "w1", (D, Fh), True), (p + "w2", (Fh, D), True)]
        if l in cfg["routed_layers"]:
            out.append((p + "router", (D,), False))
            if cfg["decision"] == "predictor":
                out += [(p + "pred_w1", (D, P), True), (p + "pred_b1", (P,), False),
                        (p + "pred_w2", (P,), False), (p + "pred_b2", (1,), False)]
    out += [("ln_f", (D,), False), ("lm_head", (D, V), True)]
    return out


class Model:
    def __init__(self, cfg, dtype=torch.float32, seed=0):
        self.cfg = cfg
        self.dtype = dtype
        self.lay = layout(cfg)
        g = torch.Generator().manual_seed(seed)
        L = cfg["layers"]
        self.p = {}
        for name, shape, _ in self.lay:
            leaf = name.split(".")[-1]
            if leaf in ("ln1", "ln2", "ln_f"):
                t = torch.ones(shape, dtype=dtype)
            elif leaf in ("pred_b1", "pred_b2"):
                t = torch.zeros(shape, dtype=dtype)
            else:
                std = 0.02
                if leaf in ("wo", "w2"):
                    std = 0.02 / math.sqrt(2 * L)
                elif leaf in ("pred_w1", "pred_w2"):
                    std = 1 / math.sqrt(shape[0])
                t = torch.randn(shape, generator=g, dtype=dtype) * std
            self.p[name] = t.requires_grad_(True)
        hd = cfg["d_model"] // cfg["heads"]
        half = hd // 2
        inv = torch.tensor([cfg["rope_theta"] ** (-(2.0 * j) / hd) for j in range(half)], dtype=torch.float64)
        ang = torch.arange(cfg["seq_len"], dtype=torch.float64)[:, None] * inv  # [T, half]
        self.cos = ang.cos().to(dtype)
        self.sin = ang.sin().to(dtype)
        T = cfg["seq_len"]
        self.k = top_k_count(cfg["capacity"], T)
        self.masks = {}

    def load_flat(self, flat):
        off = 0
        with torch.no_grad():
            for name, shape, _ in self.lay:
                n = math.prod(shape)
                self.p[name].copy_(flat[off:off + n].view(shape))
                off += n
        assert off == flat.numel()

    def flat_grad(self):
        return torch.cat([self.p[n].grad.reshape(-1) for n, _, _ in self.lay])

    def param_groups(self, wd):
        dec = [self.p[n] for n, _, d in self.lay if d]
        nodec = [self.p[n] for n, _, d in self.lay if not d]
        return [{"params": dec, "weight_decay": wd}, {"params": nodec, "weight_decay": 0.0}]

    # -- blocks --
    def rms(self, u, w):
        return u * torch.rsqrt(u.pow(2).mean(-1, keepdim=True) + self.cfg["norm_eps"]) * w

    @staticmethod
    def rope(x, cos, sin):
        half = x.shape[-1] // 2
        a, b = x[..., :half], x[..., half:]
        return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)

    def attn(self, u, p, cos, sin):
        B, S, D = u.shape
        H = self.cfg["heads"]
        hd = D // H
        qkv = (u @ self.p[p + "wqkv"]).view(B, S, 3, H, hd).permute(2, 0, 3, 1, 4)  # [3,B,H,S,hd]
        q, k, v = qkv[0], qkv[1], qkv[2]
        if cos is not None:
            q = self.rope(q, cos, sin)
            k = self.rope(k, cos, sin)
        if HAVE_SDPA:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            mask = self.masks.get(S)
            if mask is None:
                mask = torch.full((S, S), float("-inf"), dtype=self.dtype).triu(1)
                self.masks[S] = mask
            s = torch.baddbmm(mask.expand(B * H, S, S), q.reshape(B * H, S, hd),
                              k.reshape(B * H, S, hd).transpose(1, 2), alpha=1.0 / math.sqrt(hd))
            o = torch.bmm(torch.softmax(s, dim=-1), v.reshape(B * H, S, hd)).view(B, H, S, hd)
        return o.transpose(1, 2).reshape(B, S, D) @ self.p[p + "wo"]

    def mlp(self, u, p):
        return F.gelu(u @ self.p[p + "w1"], approximate="tanh") @ self.p[p + "w2"]

    def loss(self, tokens, targets):
        cfg, P = self.cfg, self.p
        B, T = tokens.shape
        D = cfg["d_model"]
        rope = cfg["positions"] == "rope"
        x = P["tok_emb"][tokens]
        if not rope:
            x = x + P["pos_emb"][:T]
        cos_full = self.cos[:T][None, None] if rope else None  # [1,1,T,half]
        sin_full = self.sin[:T][None, None] if rope else None
        aux = []
        k = self.k
        for l in range(cfg["layers"]):
            p = "layer%d." % l
            if l not in cfg["routed_layers"]:
                h = x + self.attn(self.rms(x, P[p + "ln1"]), p, cos_full, sin_full)
                x = h + self.mlp(self.rms(h, P[p + "ln2"]), p)
                continue
            z = x @ P[p + "router"]  # [B,T]
            idx = torch.topk(z, k, dim=1, sorted=False).indices.sort(dim=1).values  # [B,k]
            target = torch.zeros_like(z).scatter_(1, idx, 1.0)
            if cfg["decision"] == "aux-loss":
                aux.append(F.binary_cross_entropy_with_logits(z, target))
            else:
                xd = x.detach()
                pl = F.gelu(xd @ P[p + "pred_w1"] + P[p + "pred_b1"], approximate="tanh") @ P[p + "pred_w2"] \
                    + P[p + "pred_b2"]
                aux.append(F.binary_cross_entropy_with_logits(pl, target))
            gidx = idx.unsqueeze(-1).expand(B, k, D)
            xs = torch.gather(x, 1, gidx)
            if rope:
                cos, sin = self.cos[idx].unsqueeze(1), self.sin[idx].unsqueeze(1)  # [B,1,k,half]
            else:
                cos = sin = None
            a = self.attn(self.rms(xs, P[p + "ln1"]), p, cos, sin)
            f = a + self.mlp(self.rms(xs + a, P[p + "ln2"]), p)
            r = torch.sigmoid(torch.gather(z, 1, idx)).unsqueeze(-1)
            x = x.scatter(1, gidx, xs + r * f)
        logits = self.rms(x, P["ln_f"]) @ P["lm_head"]
        ce = F.cross_entropy(logits.view(B * T, -1), targets.view(B * T))
        loss = ce
        for b in aux:
            loss = loss + cfg["aux_loss_weight"] * b
        return loss, ce, aux


def check():
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "..", "testdata", "mod_reference.json")
    doc = json.load(open(path))
    worst = 0.0
    for c in doc["cases"]:
        m = Model(c["config"], dtype=torch.float64)
        m.load_flat(torch.tensor(c["params"], dtype=torch.float64))
        tok = torch.tensor(c["tokens"])
        tgt = torch.tensor(c["targets"])
        loss, ce, aux = m.loss(tok, tgt)
        loss.backward()
        g = m.flat_grad()
        gref = torch.tensor(c["grads"], dtype=torch.float64)
        gerr = ((g - gref).abs().max() / gref.abs().max()).item()
        lerr = abs(loss.item() - c["loss"])
        berr = max([abs(a.item() - b) for a, b in zip(aux, c["bce"])], default=0.0)
        worst = max(worst, gerr, lerr, berr)
        print("check %-18s |dloss| %.2e |dbce| %.2e max|dgrad|/max|grad| %.2e"
              % (c["name"], lerr, berr, gerr))
    ok = worst < 1e-10
    print("check:", "OK" if ok else "FAIL", "(worst %.2e)" % worst)
    sys.exit(0 if ok else 1)


def time_model(cfg, args):
    torch.manual_seed(0)
    m = Model(cfg)
    opt = torch.optim.AdamW(m.param_groups(0.1), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
    params = [m.p[n] for n, _, _ in m.lay]
    g = torch.Generator().manual_seed(1)
    B, T, V = args.batch, args.seq_len, args.vocab
    tokens = torch.randint(V, (B, T), generator=g)
    targets = torch.randint(V, (B, T), generator=g)
    times, losses = [], []
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss, _, _ = m.loss(tokens, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        dt = time.perf_counter() - t0
        losses.append(loss.item())
        if i >= args.warmup:
            times.append(dt)
        print("  %s step %d: %.3f s loss %.4f%s" % ("dense" if not cfg["routed_layers"] else "mod", i, dt,
              losses[-1], " (warmup)" if i < args.warmup else ""), file=sys.stderr, flush=True)
    return statistics.median(times), times


def main():
    if ARGS.check:
        check()
    a = ARGS
    routed = ([int(s) for s in a.routed.split(",") if s != ""] if a.routed is not None
              else list(range(1, a.layers, 2)))
    base = {"vocab": a.vocab, "d_model": a.d_model, "layers": a.layers, "heads": a.heads,
            "seq_len": a.seq_len, "mlp_hidden": a.mlp_hidden, "capacity": a.capacity,
            "decision": a.decision, "aux_loss_weight": a.aux_loss_weight,
            "predictor_hidden": a.predictor_hidden, "positions": a.positions,
            "rope_theta": 10000.0, "norm_eps": 1e-5}
    load0 = os.getloadavg()
    res = {"threads": a.threads,
           "shape": {"d_model": a.d_model, "layers": a.layers, "heads": a.heads, "seq_len": a.seq_len,
                     "batch": a.batch, "vocab": a.vocab, "mlp_hidden": a.mlp_hidden,
                     "capacity": a.capacity, "k": top_k_count(a.capacity, a.seq_len),
                     "routed_layers": routed, "decision": a.decision, "positions": a.positions}}
    if a.only in (None, "dense"):
        res["dense_step_s"], res["dense_times_s"] = time_model(dict(base, routed_layers=[]), a)
        res["dense_min_s"] = min(res["dense_times_s"])
    if a.only in (None, "mod"):
        res["mod_step_s"], res["mod_times_s"] = time_model(dict(base, routed_layers=routed), a)
        res["mod_min_s"] = min(res["mod_times_s"])
    if "dense_step_s" in res and "mod_step_s" in res:
        res["speedup"] = res["dense_step_s"] / res["mod_step_s"]
        res["speedup_of_min"] = res["dense_min_s"] / res["mod_min_s"]
    res["torch"] = torch.__version__
    res["attention"] = "sdpa" if HAVE_SDPA else "explicit masked softmax (no SDPA in this torch)"
    res["loadavg_1m_before_after"] = [load0[0], os.getloadavg()[0]]
    print(json.dumps(res))


if __name__ == "__main__":
    main()
