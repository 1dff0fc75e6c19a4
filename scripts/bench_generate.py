"""Generation speed: real-time factor and peak memory of a sonodiff model vs a matched diffusers pipeline.

For a model directory (or shipped name) at 10/25/50 steps and batch 1/16: seconds of audio generated per
wall second (text encoding + sampling + Griffin-Lim vocoder) and peak memory, next to a diffusers loop of
matched size in the same run: ``UNet2DConditionModel`` with the same parameter count +-10%,
``DPMSolverMultistepScheduler`` (2nd order), the same classifier-free guidance (two network passes per step
in one batch), the same vocoder and the same conditioning width. Every row runs in its own subprocess, so
peak memory is that row's high-water mark (CPU: process RSS; CUDA: max allocated). CPU uses ``--threads``.

sonodiff generates clips up to the model's ``audio.max_window_seconds`` in one pass (longer ones as overlapping
windows) and applies guidance only inside the model's ``sampling.guidance_interval`` when it sets one (the
unconditional branch is skipped elsewhere); ``--full-guidance`` adds a sonodiff row that guides at every step, the
algorithm the diffusers loop runs. Both nets run in channels-last layout (sonodiff's pipeline does this for 2-D
nets; the diffusers UNet is converted the same way). A row that runs past ``--row-timeout`` is reported as
"did not finish" with the upper bound it implies. Each row first runs a 2-step warm-up call at the measured shape
(both impls), then ``--repeats`` timed calls; the median is reported. On CPU every row process keeps freed
memory for reuse (:func:`sonodiff.utils.malloc.keep_freed_memory`, as ``sonodiff generate`` does), both impls.

    python scripts/bench_generate.py --model corpus_sfx_mel --json bench_generate.json
    python scripts/bench_generate.py --model fsdd_digits_mel --quick

Several ``--model`` values are measured in one run, each row against the first model's row of the same steps,
batch and duration (e.g. a latent model against the mel-space model). ``--durations 4 30 60`` measures each
length (sonodiff only past the model's one-pass window, which the diffusers loop has no counterpart of): the
peak memory of long clips shows whether windowed generation and decoding keep it bounded. ``--no-peer`` skips
the diffusers rows.

    python scripts/bench_generate.py --model runs/sfx_latent_export --model corpus_sfx_mel --quick --durations 4 30 60
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch


def peak_mb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process high-water mark (MB)


def diffusers_unet(target_params: int, in_ch: int, cross_dim: int):
    """A UNet2DConditionModel whose parameter count is within 10% of ``target_params`` (width search)."""
    from diffusers import UNet2DConditionModel

    best = None
    for base in range(16, 257, 8):
        ch = (base, base * 2, base * 4)
        m = UNet2DConditionModel(in_channels=in_ch, out_channels=in_ch, block_out_channels=ch, layers_per_block=1,
                                 cross_attention_dim=cross_dim,
                                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                                 up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                                 attention_head_dim=8, norm_num_groups=8)
        n = sum(p.numel() for p in m.parameters())
        if best is None or abs(n - target_params) < abs(best[1] - target_params):
            best = (m, n)
        if n > target_params * 1.1:
            break
    if abs(best[1] - target_params) > 0.1 * target_params:
        raise RuntimeError(f"no diffusers width within 10% of {target_params} parameters (closest {best[1]})")
    return best


def run_row(args) -> dict:
    """One (impl, steps, batch) measurement in this process."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cpu":
        from sonodiff.utils.malloc import keep_freed_memory

        keep_freed_memory()  # as `sonodiff generate` does on CPU; the same for both impls (process-wide)
    from sonodiff.pipelines import Pipeline
    from sonodiff.pipelines.decode import features_to_audio

    pipe = Pipeline.from_pretrained(args.model, device=device)
    prompt = pipe.labels[0] if pipe.labels else ("a telephone ringing" if pipe.is_conditional else None)
    dur = args.duration
    prompts = [prompt] * args.batch if prompt is not None else None
    cfg = pipe.config["sampling"]["guidance_scale"] if pipe.is_conditional else 0.0
    if args.impl.startswith("sonodiff"):
        gi = None if args.impl == "sonodiff-full-guidance" else "model"
        # warm-up at the measured shape (both impls): the first call at a new shape pays one-off kernel set-up;
        # guidance on at both steps, so the guided (2x rows) network shape is warmed up as well
        pipe(prompts, seeds=list(range(args.batch)), num_steps=2, duration_s=dur, guidance_interval=None)

        def once(steps):
            out = pipe(prompts, seeds=list(range(args.batch)), num_steps=steps, duration_s=dur, guidance_interval=gi)
            assert out.audio.shape[-1] == int(round(dur * pipe.sample_rate))

        model = args.model
    else:
        from diffusers import DPMSolverMultistepScheduler

        shape = pipe._feature_shape() + (pipe._frames(dur),)
        n_params = sum(p.numel() for p in pipe.model.denoiser.net.parameters())
        cond = pipe.model.cond(prompts, device=device) if prompts is not None else None
        tokens = cond.tokens if cond is not None and cond.tokens is not None else None
        width = tokens.shape[-1] if tokens is not None else 64
        dunet, dn = diffusers_unet(n_params, shape[0], width)
        dunet.to(device).eval()
        dunet.to(memory_format=torch.channels_last)
        sched = DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear",
                                            beta_start=0.00085, beta_end=0.012)
        b = args.batch
        with torch.no_grad():
            def once(steps):
                # text encoding as sonodiff does it, then CFG: conditional and unconditional rows in one batch
                c = pipe.model.cond(prompts, device=device) if prompts is not None else None
                enc = (c.tokens if c is not None and c.tokens is not None else torch.zeros(b, 1, width, device=device))
                enc = torch.cat([enc, torch.zeros_like(enc)]) if cfg > 0 else enc
                sched.set_timesteps(steps)
                x = torch.randn(b, *shape, device=device) * sched.init_noise_sigma
                for t in sched.timesteps:
                    xin = torch.cat([x, x]) if cfg > 0 else x
                    eps = dunet(sched.scale_model_input(xin, t), t, encoder_hidden_states=enc).sample
                    if cfg > 0:
                        ec, eu = eps.chunk(2)
                        eps = eu + cfg * (ec - eu)
                    x = sched.step(eps, t, x).prev_sample
                return features_to_audio(pipe.codec, x.float().cpu(), length=int(round(dur * pipe.sample_rate)))

            once(2)  # warm-up at the measured shape
        model = f"UNet2DConditionModel({dn / 1e6:.2f}M)"
    walls = []
    with torch.no_grad():
        for _ in range(args.repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            once(args.steps)
            if device.type == "cuda":
                torch.cuda.synchronize()
            walls.append(time.perf_counter() - t0)
    wall = sorted(walls)[len(walls) // 2]  # the median call
    return {"impl": args.impl, "model": model, "model_arg": args.model, "device": args.device, "steps": args.steps, "batch": args.batch,
            "duration_s": dur, "x_realtime": args.batch * dur / wall, "peak_mem_mb": peak_mb(device),
            "wall_s": wall, "walls_s": walls}


def table(rows: list[dict]) -> str:
    """Markdown table; each sonodiff row's ratio is against the diffusers row of the same steps and batch."""
    def fmt(r):
        return f"{r['x_realtime']:.2f}" if r["x_realtime"] is not None else f"< {r['x_realtime_below']:.2f} (unfinished)"

    first = rows[0].get("model_arg") if rows else None
    out = ["| model | impl | seconds | steps | batch | x real-time | ratio vs diffusers | ratio vs first model | peak mem (MB) |",
           "|---|---|---|---|---|---|---|---|---|"]
    same = lambda q, r: (q["steps"], q["batch"], q["duration_s"], q.get("model_arg")) == \
        (r["steps"], r["batch"], r["duration_s"], r.get("model_arg"))  # noqa: E731
    for r in rows:
        d = next((q for q in rows if q["impl"] == "diffusers" and same(q, r)), None)
        ratio = ""
        if r["impl"] != "diffusers" and d is not None and r["x_realtime"] is not None:
            ratio = (f"{r['x_realtime'] / d['x_realtime']:.2f}x" if d["x_realtime"] is not None
                     else f"> {r['x_realtime'] / d['x_realtime_below']:.2f}x")
        f = next((q for q in rows if q["impl"] == r["impl"] and q.get("model_arg") == first
                  and (q["steps"], q["batch"], q["duration_s"]) == (r["steps"], r["batch"], r["duration_s"])), None)
        vs_first = (f"{r['x_realtime'] / f['x_realtime']:.2f}x" if f is not None and r.get("model_arg") != first
                    and r["x_realtime"] and f["x_realtime"] else "")
        mem = f"{r['peak_mem_mb']:.0f}" if r["peak_mem_mb"] is not None else "-"
        out.append(f"| {r.get('model_arg', '')} | {r['impl']} | {r['duration_s']:g} | {r['steps']} | {r['batch']} | "
                   f"{fmt(r)} | {ratio} | {vs_first} | {mem} |")
    return "\n".join(out)


def _measure(args, model: str, impl: str, steps: int, b: int, dur: float) -> dict:
    """One row in its own subprocess (its peak memory is its own)."""
    cmd = [sys.executable, __file__, "--model", model, "--device", args.device, "--duration", str(dur),
           "--threads", str(args.threads), "--repeats", str(args.repeats), "--row", f"{impl},{steps},{b}"]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=args.row_timeout)
    except subprocess.TimeoutExpired:
        print(f"  {model} {impl:22s} {dur:g} s steps {steps:2d} batch {b:2d}: did not finish in {args.row_timeout:.0f} s",
              flush=True)
        return {"impl": impl, "model": "", "model_arg": model, "device": args.device, "steps": steps, "batch": b,
                "duration_s": dur, "x_realtime": None, "peak_mem_mb": None, "wall_s": None,
                "unfinished_after_s": args.row_timeout, "x_realtime_below": b * dur / args.row_timeout}
    if res.returncode != 0:
        sys.exit(f"row {model} {impl},{steps},{b} failed:\n{res.stderr[-3000:]}")
    r = json.loads(res.stdout.strip().splitlines()[-1])
    print(f"  {model} {impl:22s} {dur:g} s steps {steps:2d} batch {b:2d}: {r['x_realtime']:.2f}x real time, "
          f"peak {r['peak_mem_mb']:.0f} MB", flush=True)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", help="a model directory or shipped name; repeatable (default "
                    "corpus_sfx_mel); later ones are compared with the first")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--duration", type=float, default=4.0, help="seconds of audio per clip (default 4)")
    ap.add_argument("--durations", type=float, nargs="+", help="several clip lengths (overrides --duration)")
    ap.add_argument("--no-peer", action="store_true", help="no diffusers rows")
    ap.add_argument("--quick", action="store_true", help="25 steps, batch 1 only (under a minute on CPU)")
    ap.add_argument("--steps", type=int, nargs="+", default=[10, 25, 50], help="sampling steps (default 10 25 50)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16], help="batch sizes (default 1 16)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--full-guidance", action="store_true",
                    help="also a sonodiff row guiding at every step (when the model sets a guidance interval)")
    ap.add_argument("--row-timeout", type=float, default=900.0, help="seconds before a row is reported unfinished")
    ap.add_argument("--repeats", type=int, default=1, help="timed calls per row after the warm-up; the median is "
                                                              "reported (default 1)")
    ap.add_argument("--json")
    ap.add_argument("--row", help=argparse.SUPPRESS)  # internal: impl,steps,batch measured in a subprocess
    args = ap.parse_args()
    if args.row:
        args.model = args.model[0]
        impl, steps, batch = args.row.split(",")
        args.impl, args.steps, args.batch = impl, int(steps), int(batch)
        print(json.dumps(run_row(args)))
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device here")
    steps_list = [25] if args.quick else args.steps
    batches = [1] if args.quick else args.batches
    from sonodiff.pipelines import Pipeline

    models = args.model or ["corpus_sfx_mel"]
    rows = []
    for model in models:
        pipe = Pipeline.from_pretrained(model)
        interval = pipe.config["sampling"].get("guidance_interval")
        window = pipe.max_window_seconds
        for dur in args.durations or [args.duration]:
            impls = ["sonodiff"] + (["sonodiff-full-guidance"] if args.full_guidance and interval else []) + \
                ([] if args.no_peer or dur > window else ["diffusers"])
            for steps in steps_list:
                for b in batches:
                    for impl in impls:
                        rows.append(_measure(args, model, impl, steps, b, dur))
    peer = sorted({r["model"] for r in rows if r["impl"] == "diffusers" and r["model"]}) or ["none"]
    print(f"\nmodels {', '.join(models)}; device {args.device}"
          f"{f', {args.threads} threads' if args.device == 'cpu' else ''}; diffusers: {', '.join(peer)}\n")
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
