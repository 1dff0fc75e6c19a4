"""Summarise a training run from its TensorBoard event files: a loss table and a loss-curve plot.

Reads ``RUN_DIR/tb`` with TensorBoard's own event reader (so what it prints is what TensorBoard shows),
prints a Markdown table of the training loss (mean over each window of logged steps), the validation loss,
the per-noise-level loss buckets at the start and the end, and writes a PNG of the curves.

    python scripts/summarize_run.py runs/fsdd --png samples/fsdd_digits_mel/loss_curve.png --json summary.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def load_scalars(tb_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not tb_dir.is_dir():
        raise FileNotFoundError(f"{tb_dir} not found: the run has no TensorBoard logs (train.tensorboard=false?)")
    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    out: dict[str, dict[int, float]] = {}
    for tag in acc.Tags()["scalars"]:
        for ev in acc.Scalars(tag):  # a resumed run re-logs some steps: keep the latest value per step
            out.setdefault(tag, {})[ev.step] = ev.value
    return {tag: sorted(v.items()) for tag, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("--windows", type=int, default=8, help="rows in the loss table")
    ap.add_argument("--png", help="write the loss curves here")
    ap.add_argument("--json", help="write the summary here")
    args = ap.parse_args()
    s = load_scalars(Path(args.run_dir) / "tb")
    if "loss" not in s:
        raise SystemExit(f"no 'loss' scalar in {args.run_dir}/tb (tags: {sorted(s)})")
    loss = s["loss"]
    valid = dict(s.get("valid_loss", []))
    k = max(1, len(loss) // args.windows)
    rows = []
    print("| steps | train loss (mean) | valid loss (at end of window) |\n|---|---|---|")
    for i in range(0, len(loss), k):
        w = loss[i:i + k]
        a, b = w[0][0], w[-1][0]
        v = [val for st, val in valid.items() if st <= b]
        rows.append({"steps": [a, b], "train_loss": sum(x for _, x in w) / len(w), "valid_loss": v[-1] if v else None})
        vs = f"{v[-1]:.4f}" if v else "-"
        print(f"| {a}-{b} | {rows[-1]['train_loss']:.4f} | {vs} |")
    buckets = {t.split("/", 1)[1]: (vals[0][1], vals[-1][1]) for t, vals in s.items() if t.startswith("loss_sigma_bucket/")}
    if buckets:
        print("\n| sigma bucket | first logged loss | last logged loss |\n|---|---|---|")
        for name in sorted(buckets, key=lambda x: float(x.split("-")[0])):
            print(f"| {name} | {buckets[name][0]:.4f} | {buckets[name][1]:.4f} |")
    if "examples_per_s" in s:
        eps = [v for _, v in s["examples_per_s"]]
        print(f"\nthroughput: {sum(eps) / len(eps):.2f} examples/s (mean of logged windows)")
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
        ax.plot([a for a, _ in loss], [b for _, b in loss], label="train loss (logged windows)", lw=1)
        if valid:
            ax.plot(list(valid), list(valid.values()), "o-", label="valid loss", lw=1.5)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("EDM-weighted loss")
        ax.set_title(Path(args.run_dir).name)
        ax.legend()
        fig.tight_layout()
        Path(args.png).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.png)
        print(f"wrote {args.png}")
    if args.json:
        Path(args.json).write_text(json.dumps({"windows": rows, "valid": valid, "buckets": buckets}, indent=2))


if __name__ == "__main__":
    main()
