#!/usr/bin/python3
"""Table and plot of tools/diloco_bench.sh's results.

usage: diloco_plot.py OUT_DIR PLOT.png
Prints a Markdown table (bytes per token, wall-clock, final validation
loss on the evaluated windows and on the whole validation split, time to
the every-step run's final validation loss) and writes a plot of
validation loss against wall-clock seconds and against steps.
"""
import json
import os
import sys

WORLD = 4


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def main():
    out, png = sys.argv[1], sys.argv[2]
    names = sorted(f[:-len(".jsonl")] for f in os.listdir(out) if f.endswith(".jsonl"))
    names.sort(key=lambda n: (n != "every-step", "int8" in n, len(n)))
    runs = {}
    for name in names:
        p = os.path.join(out, name + ".jsonl")
        if os.path.getsize(p) > 0:
            runs[name] = load(p)
    if "every-step" not in runs:
        sys.exit("no every-step run in " + out)
    target = runs["every-step"][-1]["val_loss"]
    base_bpt = None
    sync = runs["every-step"]
    target_all = sync[-1].get("val_loss_all")
    print("| run | steps | FLOPs | bus bytes/token | vs sync | wall-clock s | final val loss | vs sync | all-window val loss | vs sync | s to sync's final loss | sync's s to this run's final loss |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")

    def reach(pts, loss):
        return next((p["seconds"] for p in pts if p["val_loss"] <= loss), None)

    for name, pts in runs.items():
        last = pts[-1]
        # Rank 0's sent bytes times the world: ranks send equal shares.
        bpt = last["sent_bytes"] * WORLD / last["tokens"]
        if base_bpt is None:
            base_bpt = bpt
        own = reach(pts, target)
        theirs = reach(sync, last["val_loss"])
        all_loss = last.get("val_loss_all")
        if all_loss and target_all:
            all_cols = "%.4f | %+.2f%%" % (all_loss, 100 * (all_loss / target_all - 1))
        else:
            all_cols = "- | -"
        print("| %s | %d | %.6g | %.1f | %.0f× less | %.1f | %.4f | %+.2f%% | %s | %s | %s |" % (
            name, last["step"], last["flops"], bpt, base_bpt / bpt, last["seconds"], last["val_loss"],
            100 * (last["val_loss"] / target - 1), all_cols,
            "%.1f" % own if own is not None else "not reached",
            "%.1f (%.1f× longer)" % (theirs, theirs / last["seconds"]) if theirs is not None else "-"))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot", file=sys.stderr)
        return
    fig, (by_time, by_step) = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    for name, pts in runs.items():
        by_time.plot([p["seconds"] for p in pts], [p["val_loss"] for p in pts], marker="o", ms=2, lw=1, label=name)
        by_step.plot([p["step"] for p in pts], [p["val_loss"] for p in pts], marker="o", ms=2, lw=1, label=name)
    for ax in (by_time, by_step):
        ax.axhline(target, color="grey", ls=":", lw=1, label="every-step final")
        ax.set_ylim(top=min(3.0, ax.get_ylim()[1]))
        ax.grid(alpha=0.3)
    by_time.set_xscale("log")
    by_time.set_xlabel("wall-clock seconds (4 ranks, shaped links; log scale)")
    by_time.set_ylabel("validation loss (nats/token)")
    by_time.set_title("against wall-clock")
    by_step.set_xlabel("step (equal FLOPs per step in every run)")
    by_step.set_title("against steps")
    by_step.legend(fontsize=7)
    fig.suptitle("DiLoCo vs every-step sync at equal FLOPs")
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    print("plot: " + png, file=sys.stderr)


if __name__ == "__main__":
    main()
