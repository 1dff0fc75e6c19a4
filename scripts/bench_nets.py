"""Training-step benchmark: sonodiff's U-Net against diffusers' peers at matched parameter counts.

Full run (default): 2-D: sonodiff ``UNet`` (dims=2, cross-attention to 64 text tokens of width 384, 16 of them padding) against
diffusers ``UNet2DConditionModel`` with the same levels, blocks per level, attention placement and input
(a 1 x 64 x 256 log-mel). 1-D: sonodiff ``UNet`` (dims=1, unconditional) against diffusers ``UNet1DModel``
(Dance Diffusion blocks; it has no text route) on 16 kHz waveforms of 16384 samples. Parameter counts of
each pair are checked to agree within 10%. ``--quick`` shrinks the inputs to 1 x 64 x 64 mels (16x cheaper
attention) and 4096-sample waveforms, batch 2 on CPU. The sonodiff 2-D model is the ``small-2d`` / ``base-2d``
preset with ``token_dim=384, ff_mult=4``; the 1-D model the ``small-1d`` / ``base-1d`` preset.

One training step = forward, MSE loss, backward, AdamW step. Each row runs in its own subprocess:
``examples_per_s`` = batch / median step time; ``peak_mem_mb`` = on CUDA ``torch.cuda.max_memory_allocated``,
on CPU the growth of the process's peak resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``)
from just before the model is built to the end (weights + optimizer state + activations + allocator slack).

    python scripts/bench_nets.py --quick                 # CPU, < 1 min
    python scripts/bench_nets.py --device cuda --json out.json   # bf16 autocast, eager and torch.compile
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

SR = 16000
TOKENS, TOKEN_DIM, PAD_TOKENS = 64, 384, 16


# ----------------------------------------------------------------------------- models
def sonodiff_model(model: str):
    from sonodiff.nn import UNet, unet_config

    if model.endswith("-2d"):
        return UNet(unet_config(model, token_dim=TOKEN_DIM, ff_mult=4))
    return UNet(unet_config(model))


def diffusers_model(model: str):
    """The diffusers model matched (same levels / attention placement, params within 10%) to a sonodiff preset."""
    from diffusers import UNet1DModel, UNet2DConditionModel

    if model.endswith("-2d"):
        ch, n_plain = {"small-2d": ((64, 128, 256), 1), "base-2d": ((128, 256, 384, 512), 2)}[model]
        down = ("DownBlock2D",) * n_plain + ("CrossAttnDownBlock2D",) * (len(ch) - n_plain)
        up = ("CrossAttnUpBlock2D",) * (len(ch) - n_plain) + ("UpBlock2D",) * n_plain
        return UNet2DConditionModel(
            sample_size=(64, 256),
            in_channels=1,
            out_channels=1,
            block_out_channels=ch,
            down_block_types=down,
            up_block_types=up,
            layers_per_block=2,
            cross_attention_dim=TOKEN_DIM,
            attention_head_dim=[c // 64 for c in ch],
            norm_num_groups=32,
        )
    ch = {"small-1d": (32, 32, 64, 64, 128, 128, 256), "base-1d": (64, 64, 128, 128, 256, 256, 384, 512)}[
        model
    ]
    k, na = len(ch), 3
    down = ("DownBlock1DNoSkip",) + ("DownBlock1D",) * (k - 1 - na) + ("AttnDownBlock1D",) * na
    up = ("AttnUpBlock1D",) * na + ("UpBlock1D",) * (k - 1 - na) + ("UpBlock1DNoSkip",)
    return UNet1DModel(
        sample_size=16384,
        in_channels=1,
        out_channels=1,
        extra_in_channels=16,
        time_embedding_type="fourier",
        time_embedding_dim=16,
        flip_sin_to_cos=True,
        use_timestep_embedding=False,
        block_out_channels=ch,
        down_block_types=down,
        up_block_types=up,
        mid_block_type="UNetMidBlock1D",
        norm_num_groups=8,
        layers_per_block=1,
    )


def make_step(impl: str, model: str, net, batch: int, length: int, frames: int, device):
    """Inputs and a closure ``() -> loss`` for one forward + loss on a fixed random batch."""
    import torch

    g = torch.Generator().manual_seed(0)
    two_d = model.endswith("-2d")
    x = torch.randn((batch, 1, 64, frames) if two_d else (batch, 1, length), generator=g).to(device)
    target = torch.randn(x.shape, generator=g).to(device)
    t = torch.rand(batch, generator=g).to(device)
    if two_d:
        tokens = torch.randn(batch, TOKENS, TOKEN_DIM, generator=g).to(device)
        mask = torch.ones(batch, TOKENS, dtype=torch.bool)
        mask[:, TOKENS - PAD_TOKENS :] = False
        mask = mask.to(device)
    if impl == "sonodiff":
        from sonodiff.core.cond import Cond

        cond = Cond(tokens=tokens, mask=mask) if two_d else None
        c_noise = t * 4 - 2
        return lambda: torch.nn.functional.mse_loss(net(x, c_noise, cond).float(), target)
    steps = t * 999
    if two_d:
        return lambda: torch.nn.functional.mse_loss(
            net(x, steps, encoder_hidden_states=tokens, encoder_attention_mask=mask).sample.float(), target
        )
    return lambda: torch.nn.functional.mse_loss(net(x, steps).sample.float(), target)


# ----------------------------------------------------------------------------- one row (subprocess)
def run_row(spec: dict) -> dict:
    import torch

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    torch.manual_seed(0)
    build = sonodiff_model if spec["impl"] == "sonodiff" else diffusers_model
    net = build(spec["model"]).to(device).train()
    params = sum(p.numel() for p in net.parameters())
    if spec["channels_last"] and spec["model"].endswith("-2d"):
        net = net.to(memory_format=torch.channels_last)
    fwd = torch.compile(net) if spec["compile"] else net
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    loss_fn = make_step(
        spec["impl"], spec["model"], fwd, spec["batch"], spec["length"], spec["frames"], device
    )
    dtype = {"float32": None, "bfloat16": torch.bfloat16}[spec["dtype"]]

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(spec["warmup"] + spec["steps"]):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        if i >= spec["warmup"]:
            times.append(time.perf_counter() - t0)
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024  # KiB on Linux
    return {
        "impl": spec["impl"],
        "model": spec["model"],
        "device": spec["device"],
        "dtype": spec["dtype"],
        "compile": spec["compile"],
        "batch": spec["batch"],
        "params": params,
        "input": f"1x64x{spec['frames']}" if spec["model"].endswith("-2d") else f"1x{spec['length']}",
        "examples_per_s": spec["batch"] / statistics.median(times),
        "peak_mem_mb": peak,
    }


def spawn(spec: dict) -> dict:
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--_row", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"benchmark row {spec} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- main
def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="small models, batch 2 on CPU, 1 x 64 x 64 mels and 4096-sample waveforms, 2 timed steps (< 1 min on an idle CPU)",
    )
    ap.add_argument("--json", metavar="PATH", help="write the rows as a JSON list")
    ap.add_argument("--models", nargs="+", help="subset of small-2d base-2d small-1d base-1d")
    ap.add_argument("--batch", type=int, help="batch size (default 16; 2 with --quick on CPU)")
    ap.add_argument(
        "--threads", type=int, default=0, help="torch intra-op threads on CPU (0 = torch default)"
    )
    ap.add_argument("--channels-last", action="store_true", help="channels-last memory format for 2-D models")
    ap.add_argument("--_row", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._row:
        print(json.dumps(run_row(json.loads(args._row))))
        return

    quick = args.quick
    models = args.models or (
        ["small-2d", "small-1d"] if quick else ["small-2d", "base-2d", "small-1d", "base-1d"]
    )
    batch = args.batch or (2 if quick and args.device == "cpu" else 16)
    variants = [("float32", False)]
    if args.device == "cuda":
        variants = [("bfloat16", False), ("bfloat16", True)]
    rows = []
    for model in models:
        for dtype, comp in variants:
            pair = []
            for impl in ("sonodiff", "diffusers"):
                spec = {
                    "impl": impl,
                    "model": model,
                    "device": args.device,
                    "dtype": dtype,
                    "compile": comp,
                    "batch": batch,
                    "length": 4096 if quick else 16384,
                    "frames": 64 if quick else 256,
                    "threads": args.threads,
                    "channels_last": args.channels_last,
                    "warmup": 1 if quick else 3,
                    "steps": 2 if quick else 10,
                }
                pair.append(spawn(spec))
                print(f"  done {impl} {model} {dtype} compile={comp}", file=sys.stderr, flush=True)
            a, b = pair
            if abs(a["params"] - b["params"]) > 0.1 * b["params"]:
                raise RuntimeError(
                    f"{model}: parameter counts differ by more than 10%: {a['params']} vs {b['params']}"
                )
            rows += pair
    hdr = (
        f"| {'impl':9} | {'model':8} | {'input':9} | {'device':6} | {'dtype':8} | compile | batch | {'params':>8} "
        "| ex/s    | peak MB | speed-up | mem ratio |"
    )
    print(hdr)
    print("|" + "|".join("-" * (len(c)) for c in hdr.split("|")[1:-1]) + "|")
    for i, r in enumerate(rows):
        ref = rows[i + 1] if r["impl"] == "sonodiff" else r
        print(
            f"| {r['impl']:9} | {r['model']:8} | {r['input']:9} | {r['device']:6} | {r['dtype']:8} | {r['compile']!s:7} | "
            f"{r['batch']:5} | {r['params'] / 1e6:7.2f}M | {r['examples_per_s']:7.2f} | {r['peak_mem_mb']:7.0f} | "
            f"{r['examples_per_s'] / ref['examples_per_s']:7.2f}x | {r['peak_mem_mb'] / max(ref['peak_mem_mb'], 1e-9):8.2f}x |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
