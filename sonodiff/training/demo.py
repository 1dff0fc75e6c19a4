"""Periodic demo generations during training: fixed prompts and seeds, so runs and steps are comparable.

Written to ``RUN_DIR/demos/step_XXXXXXXX/{k}_{prompt}.wav`` and ``.png`` (log-mel image) and to
TensorBoard (audio and image). Mel models are voiced with ``demo.vocoder``. Image models write
``{k}_{prompt}.png`` and ``grid.png`` (all prompts side by side).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

__all__ = ["write_demos", "spectrogram_png"]


def _slug(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9]+", "_", str(text)).strip("_")[:40] or "uncond"


def spectrogram_png(path: str | Path, feats: torch.Tensor, title: str = "") -> "np.ndarray":  # noqa: F821 - numpy is imported where it is used
    """Save a ``[n_mels, frames]`` (or ``[C, n_mels, frames]``) feature image as PNG; return it as HWC uint8."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    f = feats.detach().float().cpu()
    while f.ndim > 2:
        f = f[0]
    fig, ax = plt.subplots(figsize=(5, 2.6), dpi=100)
    im = ax.imshow(f.numpy(), origin="lower", aspect="auto", cmap="magma")
    ax.set_xlabel("frame")
    ax.set_ylabel("mel bin")
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.canvas.draw()
    img = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    from sonodiff.utils.atomic import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return img


@torch.no_grad()
def write_demos(model, cfg, codec, frames: int, step: int, run_dir, logger, device) -> list[Path]:
    from sonodiff.audio.io import peak_normalize, save_audio
    from sonodiff.pipelines.decode import features_to_audio
    from sonodiff.pipelines.sampling import generate_latents, inference_values, takes_prompt

    d = cfg.demo
    prompts = list(d.prompts) if d.prompts else [None]
    if model.conditioner is None or not takes_prompt(model.conditioner):
        prompts = [None] * max(1, len(prompts))
    seeds = [d.seed + i for i in range(len(prompts))]
    from sonodiff.models.diffusion import example_shape

    demo_frames = frames if not d.seconds or codec.modality != "audio" else _frames(codec, d.seconds)
    shape = tuple(example_shape(codec, cfg.data.seconds)[:-1]) + (demo_frames,)
    cond = None  # timing conditioners are given (0, the demo's length), prompt conditioners the prompts
    if model.conditioner is not None and (prompts[0] is not None or not takes_prompt(model.conditioner)):
        seconds = d.seconds or cfg.data.seconds
        cond = model.cond([inference_values(model.conditioner, p, seconds) for p in prompts], device=device)
    model.eval()
    z = generate_latents(model.denoiser, shape, seeds, cond=cond, guidance_scale=d.guidance_scale,
                         cfg_rescale=d.cfg_rescale, num_steps=d.steps, sampler=d.sampler,
                         sampler_options=d.sampler_options, schedule=d.schedule, schedule_options=d.schedule_options,
                         sigma_min=cfg.model.sigma_min, sigma_max=cfg.model.sigma_max, device=device)
    out = Path(run_dir) / "demos" / f"step_{step:08d}"
    if codec.modality == "image":
        return _image_demos(codec, z.cpu(), prompts, step, out, logger)
    vocoder = None
    if codec.mel_config is not None:
        from sonodiff.models.vocoders import load_vocoder

        vocoder = load_vocoder(d.vocoder, expect=codec.mel_config)
    audio = features_to_audio(codec, z.cpu(), vocoder=vocoder)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for k, (p, a) in enumerate(zip(prompts, audio)):
        name = f"{k}_{_slug(p) if p is not None else 'uncond'}"
        a = peak_normalize(a, -1.0) if a.abs().max() > 0 else a
        written.append(save_audio(out / f"{name}.wav", a, codec.sample_rate))
        img = spectrogram_png(out / f"{name}.png", codec.decode(z[k:k + 1])[0], title=f"step {step}: {p or 'uncond'}")
        logger.audio(f"demo/{name}", step, a, codec.sample_rate)
        logger.image(f"demo_spec/{name}", step, img)
    return written


def _frames(codec, seconds: float) -> int:
    from sonodiff.models.diffusion import frames_for_seconds

    return frames_for_seconds(codec, seconds)


def _image_demos(codec, z: torch.Tensor, prompts: list, step: int, out: Path, logger) -> list[Path]:
    """Image models: one PNG per prompt and a grid of them (also to TensorBoard)."""
    from sonodiff.audio.image_io import image_grid, save_png

    images = codec.decode(z)
    out.mkdir(parents=True, exist_ok=True)
    written = [save_png(out / f"{k}_{_slug(p) if p is not None else 'uncond'}.png", im)
               for k, (p, im) in enumerate(zip(prompts, images))]
    grid = image_grid(images, columns=len(images))
    written.append(save_png(out / "grid.png", grid))
    g = grid.permute(1, 2, 0)
    logger.image("demo/grid", step, (g.expand(*g.shape[:2], 3) if g.shape[-1] == 1 else g).numpy())
    return written
