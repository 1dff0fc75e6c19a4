"""Training-step benchmark of the `corpus_sfx_mel` model against diffusers' UNet2DConditionModel of matched size.

One step = the whole training step as the trainer runs it: sonodiff ``Preconditioned.loss`` (EDM, log-normal
sigma) of the recipe's U-Net on a batch of 4-second 64-bin log-mels ``[B, 1, 64, 251]`` with 16 caption tokens
of width 384 (the bundled MiniLM's) and a pooled vector, backward, AdamW step; diffusers: the same input,
eps-MSE at a random timestep, the same optimizer. Parameter counts agree within 10% (width search).
Each row runs in its own subprocess. ``peak_mem_mb``: CUDA max allocated, or on CPU the growth of the peak
resident set size. ``mfu`` (CUDA only): model FLOPs per step from ``torch.utils.flop_counter`` divided by step
time and the GPU's dense bf16 peak (--peak-tflops, default 989 for an H100 SXM).

    python scripts/bench_train.py --quick                       # CPU, < 1 min
    python scripts/bench_train.py --device cuda --json out.json # bf16, with and without torch.compile
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

TOKENS, TOKEN_DIM, FRAMES, MELS = 16, 384, 251, 64


def sonodiff_step_fn(device, dtype, compile_):
    import torch

    from sonodiff.core import Cond, Preconditioned
    from sonodiff.nn import build_network, unet_config

    net = build_network("unet", unet_config("small-2d", in_channels=1, out_channels=1, token_dim=TOKEN_DIM,
                                            pooled_dim=TOKEN_DIM)).to(device)
    model = Preconditioned(net, "edm", sigma_data=1.0)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=device.type == "cuda")
    fwd = torch.compile(model.loss) if compile_ else model.loss

    def step(x, tokens, mask, pooled, g):
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = fwd(x, cond=Cond(tokens=tokens, mask=mask, pooled=pooled), generator=g).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return net, step


def diffusers_step_fn(device, dtype, compile_, target):
    import torch
    from diffusers import UNet2DConditionModel

    best = None
    for base in range(32, 257, 8):
        ch = (base, base * 2, base * 4)
        m = UNet2DConditionModel(sample_size=(MELS, FRAMES), in_channels=1, out_channels=1, block_out_channels=ch,
                                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                                 up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                                 layers_per_block=2, cross_attention_dim=TOKEN_DIM, attention_head_dim=[c // 64 for c in ch],
                                 norm_num_groups=8)
        n = sum(p.numel() for p in m.parameters())
        if best is None or abs(n - target) < abs(best[1] - target):
            best = (m, n)
        if n > 1.1 * target:
            break
    if abs(best[1] - target) > 0.1 * target:
        raise SystemExit(f"no diffusers width within 10% of {target} parameters (closest {best[1]})")
    net = best[0].to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=device.type == "cuda")
    fwd = torch.compile(net) if compile_ else net

    def step(x, tokens, mask, pooled, g):
        t = torch.randint(0, 1000, (x.shape[0],), device=x.device)
        noise = torch.randn_like(x)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            out = fwd(x + noise, t, encoder_hidden_states=tokens, encoder_attention_mask=mask).sample
            loss = torch.nn.functional.mse_loss(out.float(), noise)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return net, step


def run_row(spec: dict) -> dict:
    import torch

    device = torch.device(spec["device"])
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[spec["dtype"]]
    torch.manual_seed(0)
    if device.type == "cpu":
        torch.set_num_threads(spec["threads"])
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if spec["impl"] == "sonodiff":
        net, step = sonodiff_step_fn(device, dtype, spec["compile"])
    else:
        net, step = diffusers_step_fn(device, dtype, spec["compile"], spec["target_params"])
    params = sum(p.numel() for p in net.parameters())
    B = spec["batch"]
    g = torch.Generator(device).manual_seed(0)
    x = torch.randn(B, 1, MELS, FRAMES, device=device)
    tokens = torch.randn(B, TOKENS, TOKEN_DIM, device=device)
    mask = torch.ones(B, TOKENS, dtype=torch.bool, device=device)
    mask[:, TOKENS // 2:] = False
    pooled = torch.randn(B, TOKEN_DIM, device=device)
    for _ in range(spec["warmup"]):
        step(x, tokens, mask, pooled, g)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(spec["iters"]):
        t0 = time.perf_counter()
        step(x, tokens, mask, pooled, g)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    mfu = None
    if device.type == "cuda":
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as fc:
            step(x, tokens, mask, pooled, g)
        mfu = fc.get_total_flops() / t / (spec["peak_tflops"] * 1e12)
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    return {"impl": spec["impl"], "device": spec["device"], "dtype": spec["dtype"], "compile": spec["compile"],
            "batch": B, "params": params, "steps_per_s": 1 / t, "examples_per_s": B / t, "peak_mem_mb": peak, "mfu": mfu}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--quick", action="store_true", help="batch 2, 1 warm-up + 2 timed steps, fp32 eager only")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    ap.add_argument("--json")
    ap.add_argument("--_row", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._row:
        print(json.dumps(run_row(json.loads(args._row))))
        return
    import torch

    from sonodiff.nn import build_network, unet_config

    target = sum(p.numel() for p in build_network("unet", unet_config(
        "small-2d", in_channels=1, out_channels=1, token_dim=TOKEN_DIM, pooled_dim=TOKEN_DIM)).parameters())
    batch = 2 if args.quick else args.batch
    configs = [("fp32", False)] if args.device == "cpu" else [("bf16", False), ("bf16", True)]
    rows = []
    for dtype, comp in configs:
        for impl in ("sonodiff", "diffusers"):
            spec = {"impl": impl, "device": args.device, "dtype": dtype, "compile": comp, "batch": batch,
                    "threads": args.threads, "warmup": 1 if args.quick else 2, "iters": 2 if args.quick else 5,
                    "target_params": target, "peak_tflops": args.peak_tflops}
            r = subprocess.run([sys.executable, __file__, "--_row", json.dumps(spec)], capture_output=True, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
            if r.returncode != 0:
                raise SystemExit(f"row {spec} failed:\n{r.stderr[-2000:]}")
            rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    print("| impl | device | dtype | compile | batch | params (M) | steps/s | examples/s | ratio | peak mem (MB) | MFU |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for i in range(0, len(rows), 2):
        s, d = rows[i], rows[i + 1]
        for r in (s, d):
            ratio = f"{s['examples_per_s'] / d['examples_per_s']:.2f}x" if r is s else ""
            mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
            print(f"| {r['impl']} | {r['device']} | {r['dtype']} | {r['compile']} | {r['batch']} | {r['params'] / 1e6:.2f} | "
                  f"{r['steps_per_s']:.3f} | {r['examples_per_s']:.2f} | {ratio} | {r['peak_mem_mb']:.0f} | {mfu} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
