"""Generation speed: real-time factor and peak memory of a sonodiff model vs a matched diffusers pipeline.

For a model directory (or shipped name) at 10/25/50 steps and batch 1/16: seconds of audio generated per
wall second (sampling + Griffin-Lim vocoder) and peak memory, next to a diffusers loop of matched size
(UNet2DConditionModel with the same parameter count +-10%, DPMSolverMultistepScheduler, the same vocoder,
the same conditioning width) in the same run. CPU runs with 2 threads; CUDA when asked and available.

    python scripts/bench_generate.py --model fsdd_digits_mel --json bench_generate.json
    python scripts/bench_generate.py --model fsdd_digits_mel --quick
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch


def peak_mb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process high-water mark (MB)


def diffusers_unet(target_params: int, example_shape, cross_dim: int):
    """A UNet2DConditionModel whose parameter count is within 10% of ``target_params`` (width search)."""
    from diffusers import UNet2DConditionModel

    best = None
    for base in range(16, 257, 8):
        ch = (base, base * 2, base * 4)
        m = UNet2DConditionModel(sample_size=example_shape[-2:], in_channels=example_shape[0], out_channels=example_shape[0],
                                 block_out_channels=ch, layers_per_block=1, cross_attention_dim=cross_dim,
                                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                                 up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                                 attention_head_dim=8, norm_num_groups=8)
        n = sum(p.numel() for p in m.parameters())
        if best is None or abs(n - target_params) < abs(best[1] - target_params):
            best = (m, n)
        if n > target_params * 1.1:
            break
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="fsdd_digits_mel")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--quick", action="store_true", help="steps 10 only, batch 1 only")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    from diffusers import DPMSolverMultistepScheduler

    from sonodiff.pipelines import Pipeline
    from sonodiff.pipelines.decode import features_to_audio

    pipe = Pipeline.from_pretrained(args.model, device=device)
    prompt = pipe.labels[0] if pipe.labels else ("a dog barking" if pipe.is_conditional else None)
    dur = pipe.train_seconds
    shape = pipe._feature_shape() + (pipe._frames(dur),)
    n_params = sum(p.numel() for p in pipe.model.denoiser.net.parameters())
    cond_dim = pipe.model.conditioner.pooled_dim if pipe.model.conditioner is not None else 64
    dunet, dn = diffusers_unet(n_params, shape, max(cond_dim, 8))
    dunet.to(device).eval()
    sched = DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                                        beta_end=0.012)
    steps_list = [10] if args.quick else [10, 25, 50]
    batches = [1] if args.quick else [1, 16]
    rows = []
    for steps in steps_list:
        for b in batches:
            prompts = [prompt] * b if prompt is not None else None
            pipe(prompts, seeds=list(range(b)), num_steps=2)  # warm-up
            t0 = time.perf_counter()
            pipe(prompts, seeds=list(range(b)), num_steps=steps)
            wall = time.perf_counter() - t0
            rows.append({"impl": "sonodiff", "model": args.model, "device": args.device, "steps": steps, "batch": b,
                         "duration_s": dur, "x_realtime": b * dur / wall, "peak_mem_mb": peak_mb(device)})
            # diffusers: the same sized latent, cross-attention to one token, same vocoder
            enc = torch.randn(b, 1, max(cond_dim, 8), device=device)
            with torch.no_grad():
                t0 = time.perf_counter()
                sched.set_timesteps(steps)
                x = torch.randn(b, *shape, device=device) * sched.init_noise_sigma
                for t in sched.timesteps:
                    eps = dunet(sched.scale_model_input(x, t), t, encoder_hidden_states=enc).sample
                    x = sched.step(eps, t, x).prev_sample
                features_to_audio(pipe.codec, x.float().cpu(), length=int(dur * pipe.sample_rate))
                wall = time.perf_counter() - t0
            rows.append({"impl": "diffusers", "model": f"UNet2DConditionModel({dn / 1e6:.2f}M)", "device": args.device,
                         "steps": steps, "batch": b, "duration_s": dur, "x_realtime": b * dur / wall,
                         "peak_mem_mb": peak_mb(device)})
    print(f"sonodiff net {n_params / 1e6:.2f} M params, diffusers UNet2DConditionModel {dn / 1e6:.2f} M params\n")
    print("| impl | steps | batch | x real-time | ratio vs diffusers | peak mem (MB) |\n|---|---|---|---|---|---|")
    for i in range(0, len(rows), 2):
        s, d = rows[i], rows[i + 1]
        for r in (s, d):
            ratio = f"{s['x_realtime'] / d['x_realtime']:.2f}x" if r is s else ""
            print(f"| {r['impl']} | {r['steps']} | {r['batch']} | {r['x_realtime']:.2f} | {ratio} | {r['peak_mem_mb']:.0f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
