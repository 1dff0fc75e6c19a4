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

``--shape fsdd``: the ``fsdd_digits_mel`` engine question of issue 14 on a CPU. The network is the one that
recipe trained until December 2026 (``small-2d`` with channels 32/64/128, self-attention at the 32x24 and
16x12 levels and the bottleneck, a 10-class label embedding entering as the pooled vector) on its input,
64-bin log-mels of 0.75 s ``[B, 1, 64, 47]``; the step is the trainer's: the recipe's ``DiffusionModel``
forward (EDM loss at the density's sigmas, CFG label dropout), backward, gradient clipping, AdamW, EMA update.
Rows: the recipe's old settings (fp32, batch 16: "today"), then the engine's settings on the same network
and input (bf16 autocast where the CPU has AVX512-BF16/AMX, batch 32, with and without torch.compile, whose
compile seconds are reported and amortised over a 90-minute run), each beside a diffusers
``UNet2DModel`` of matched size (the same levels, attention levels and class embedding) at the same dtype
and batch, trained the way diffusers' examples do (eps-MSE at a random timestep). A last row times the
network that recipe ships now (48 bins, no attention at the 24x24 level) for reference.

    python scripts/bench_train.py --shape fsdd --json runs/bench_train_fsdd.json
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

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


def matched_width(make, bases, target):
    """The model ``make(base)`` (channels base, 2 base, 4 base) whose parameter count is closest to ``target``."""
    best = None
    for base in bases:
        m = make(base)
        n = sum(p.numel() for p in m.parameters())
        if best is None or abs(n - target) < abs(best[1] - target):
            best = (m, n)
        if n > 1.1 * target:
            break
    if abs(best[1] - target) > 0.1 * target:
        raise SystemExit(f"no diffusers width within 10% of {target} parameters (closest {best[1]})")
    return best[0]


def diffusers_step_fn(device, dtype, compile_, target):
    import torch
    from diffusers import UNet2DConditionModel

    def make(base):
        ch = (base, base * 2, base * 4)
        return UNet2DConditionModel(sample_size=(MELS, FRAMES), in_channels=1, out_channels=1, block_out_channels=ch,
                                    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                                    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                                    layers_per_block=2, cross_attention_dim=TOKEN_DIM,
                                    attention_head_dim=[c // 64 for c in ch], norm_num_groups=8)

    net = matched_width(make, range(32, 257, 8), target).to(device)
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


FSDD_MELS, FSDD_FRAMES, FSDD_LABELS = 64, 47, [str(i) for i in range(10)]
FSDD_OLD_NET = {"channels": [32, 64, 128], "groups": 16, "head_dim": 32, "attention": [False, True, True]}


def fsdd_model(mels: int, net_options: dict):
    """The recipe's DiffusionModel (network, EDM preconditioning, class-label conditioner) at ``mels`` bins."""
    from sonodiff.training.build import build_model
    from sonodiff.training.config import load_config

    cfg = load_config(os.path.join(REPO, "recipes", "fsdd_digits_mel.toml"),
                      [f"codec.options.n_mels={mels}", "data.root=unused",
                       "model.options={" + ", ".join(f"{k} = {_toml(v)}" for k, v in net_options.items()) + "}"])
    model, _ = build_model(cfg, (1, mels, FSDD_FRAMES), FSDD_LABELS)
    return cfg, model


def _toml(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return repr(v)


def fsdd_sonodiff_step_fn(device, dtype, compile_, mels, net_options):
    import torch

    from sonodiff.core.schedules import sample_sigmas
    from sonodiff.training.ema import EMA

    cfg, model = fsdd_model(mels, net_options)
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=device.type == "cuda")
    ema = EMA(model, 10000.0)
    fwd = torch.compile(model) if compile_ else model
    labels = FSDD_LABELS

    def step(x, g):
        B = x.shape[0]
        sigma = sample_sigmas(cfg.model.density, B, generator=g, **cfg.model.density_options).to(device)
        noise = torch.randn(x.shape, generator=g).to(device)
        mask = torch.ones(B, 1, *x.shape[2:], device=device)
        values = [labels[i % len(labels)] for i in range(B)]
        drop = torch.rand(B, generator=g).to(device) < cfg.conditioning.dropout
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = fwd(x, sigma, noise, mask, values, drop).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema.update(model, B, 10**6)

    return model, step


def fsdd_diffusers_step_fn(device, dtype, compile_, target, mels):
    """diffusers UNet2DModel: the same three levels (2 blocks each), attention at levels 1 and 2 and the
    bottleneck, 10 class embeddings; width chosen so the parameter count is within 10% of sonodiff's."""
    import torch
    from diffusers import UNet2DModel

    def make(base):
        return UNet2DModel(sample_size=(mels, 48), in_channels=1, out_channels=1,
                           block_out_channels=(base, base * 2, base * 4),
                           down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
                           up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"), layers_per_block=2,
                           attention_head_dim=32, norm_num_groups=16 if base % 16 == 0 else 8,
                           num_class_embeds=len(FSDD_LABELS))

    net = matched_width(make, range(16, 129, 8), target).to(device)
    params = list(net.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4, fused=device.type == "cuda")
    fwd = torch.compile(net) if compile_ else net

    def step(x, g):
        B = x.shape[0]
        x = torch.nn.functional.pad(x, (0, 1))  # 47 -> 48 frames: diffusers needs sizes divisible by 4
        t = torch.randint(0, 1000, (B,), generator=g).to(device)
        noise = torch.randn(x.shape, generator=g).to(device)
        cls = torch.randint(0, len(FSDD_LABELS), (B,), generator=g).to(device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            out = fwd(x + noise, t, class_labels=cls).sample
            loss = torch.nn.functional.mse_loss(out.float(), noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return net, step


def _row_setup(spec: dict):
    """(device, autocast dtype) of a row, with the seed and CPU thread count set."""
    import torch

    device = torch.device(spec["device"])
    torch.manual_seed(0)
    if device.type == "cpu":
        torch.set_num_threads(spec["threads"])
    return device, {"fp32": torch.float32, "bf16": torch.bfloat16}[spec["dtype"]]


def run_fsdd_row(spec: dict) -> dict:
    import torch

    device, dtype = _row_setup(spec)
    mels = spec["mels"]
    t_build = time.perf_counter()
    if spec["impl"] == "sonodiff":
        net, step = fsdd_sonodiff_step_fn(device, dtype, spec["compile"], mels, spec["net"])
    else:
        net, step = fsdd_diffusers_step_fn(device, dtype, spec["compile"], spec["target_params"], mels)
    params = sum(p.numel() for p in net.parameters() if p.requires_grad)
    B = spec["batch"]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, 1, mels, FSDD_FRAMES, device=device)
    t0 = time.perf_counter()
    for _ in range(spec["warmup"]):
        step(x, g)
    warm = time.perf_counter() - t0
    times = []
    for _ in range(spec["iters"]):
        t0 = time.perf_counter()
        step(x, g)
        times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    compile_s = max(0.0, warm - spec["warmup"] * t) if spec["compile"] else 0.0
    run_s = 90 * 60.0  # a 90-minute run: what compilation costs of it, in examples/s over the whole run
    return {"impl": spec["impl"], "row": spec["row"], "device": spec["device"], "dtype": spec["dtype"],
            "compile": spec["compile"], "batch": B, "mels": mels, "params": params, "steps_per_s": 1 / t,
            "examples_per_s": B / t, "compile_s": round(compile_s, 1),
            "examples_per_s_90min": B / t * max(0.0, run_s - compile_s) / run_s,
            "build_s": round(t0 - t_build, 1)}


def main_fsdd(args) -> None:

    from sonodiff.utils.cpu import cpu_has_fast_bf16

    _, ref = fsdd_model(FSDD_MELS, FSDD_OLD_NET)
    target = sum(p.numel() for p in ref.parameters() if p.requires_grad)
    fast = "bf16" if (args.device == "cuda" or cpu_has_fast_bf16()) else "fp32"
    if fast == "fp32":
        print("this CPU has no native bf16 (AVX512-BF16 / AMX): the engine rows run in fp32")
    warm, iters = (1, 2) if args.quick else (2, 6)
    base = {"device": args.device, "threads": args.threads, "warmup": warm, "iters": iters, "target_params": target}
    specs = [  # (row, impl, dtype, batch, compile, mels, network)
        ("today", "sonodiff", "fp32", 16, False, FSDD_MELS, FSDD_OLD_NET),
        ("today", "diffusers", "fp32", 16, False, FSDD_MELS, None),
        ("engine", "sonodiff", fast, 32, False, FSDD_MELS, FSDD_OLD_NET),
        ("engine", "diffusers", fast, 32, False, FSDD_MELS, None),
    ]
    if not args.quick and not args.no_compile:
        specs += [("engine+compile", "sonodiff", fast, 32, True, FSDD_MELS, FSDD_OLD_NET),
                  ("engine+compile", "diffusers", fast, 32, True, FSDD_MELS, None)]
    from sonodiff.training.config import load_config as _lc

    shipped = _lc(os.path.join(REPO, "recipes", "fsdd_digits_mel.toml"), ["data.root=unused"])
    specs.append(("shipped recipe network", "sonodiff", fast, shipped.train.batch_size, False,
                  int(shipped.codec.options["n_mels"]), dict(shipped.model.options)))
    if args.quick:
        specs = [(r, i, d, 2, c, m, n) for r, i, d, _, c, m, n in specs]
    rows = []
    for row, impl, dtype, batch, comp, mels, net in specs:
        spec = {**base, "row": row, "impl": impl, "dtype": dtype, "batch": batch, "compile": comp, "mels": mels,
                "net": net}
        r = subprocess.run([sys.executable, __file__, "--_fsdd_row", json.dumps(spec)], capture_output=True,
                           text=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
        if r.returncode != 0:
            raise SystemExit(f"row {spec} failed:\n{r.stderr[-3000:]}")
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
        print(f"  {row} / {impl}: {rows[-1]['examples_per_s']:.2f} examples/s", flush=True)
    today = rows[0]["examples_per_s"]
    print("| row | impl | dtype | compile (s) | batch | mels | params (M) | examples/s | over 90 min | x today | x diffusers |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    peer = {(r["row"]): r for r in rows if r["impl"] == "diffusers"}
    for r in rows:
        d = peer.get(r["row"]) if r["impl"] == "sonodiff" else None
        vs = f"{r['examples_per_s'] / d['examples_per_s']:.2f}x" if d else ""
        comp = f"{r['compile_s']:.0f}" if r["compile"] else "no"
        print(f"| {r['row']} | {r['impl']} | {r['dtype']} | {comp} | {r['batch']} | {r['mels']} | "
              f"{r['params'] / 1e6:.2f} | {r['examples_per_s']:.2f} | {r['examples_per_s_90min']:.2f} | "
              f"{r['examples_per_s'] / today:.2f}x | {vs} |")
    if args.json:
        from sonodiff.utils.atomic import atomic_write_json

        atomic_write_json(args.json, {"shape": "fsdd", "threads": args.threads, "rows": rows}, indent=1)
        print(f"wrote {args.json}")


def run_row(spec: dict) -> dict:
    import torch

    device, dtype = _row_setup(spec)
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
    ap.add_argument("--shape", default="sfx", choices=["sfx", "fsdd"],
                    help="sfx: corpus_sfx_mel's step (default); fsdd: fsdd_digits_mel's engine rows (see above)")
    ap.add_argument("--no-compile", action="store_true", help="fsdd: skip the torch.compile rows")
    ap.add_argument("--_row", help=argparse.SUPPRESS)
    ap.add_argument("--_fsdd_row", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._row:
        print(json.dumps(run_row(json.loads(args._row))))
        return
    if args._fsdd_row:
        print(json.dumps(run_fsdd_row(json.loads(args._fsdd_row))))
        return
    if args.shape == "fsdd":
        main_fsdd(args)
        return

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
