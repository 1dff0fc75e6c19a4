"""`sonodiff export RUN_DIR --out MODEL_DIR`: the inference directory of a training run (EMA weights)."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["export_run"]


def export_run(run_dir: str | Path, out: str | Path, checkpoint: str = "latest") -> Path:
    """Export a run's EMA weights (``checkpoint``: "latest", "best" or a folder name such as step_00001000)."""
    from sonodiff.audio.codecs import load_codec
    from sonodiff.pipelines.model_dir import save_model_dir
    from sonodiff.training.build import frames_for_seconds
    from sonodiff.training.checkpoint import latest_checkpoint, load_checkpoint

    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path} not found: {run_dir} is not a sonodiff training run")
    run = json.loads(cfg_path.read_text())
    root = run_dir / "checkpoints"
    ckpt = latest_checkpoint(root) if checkpoint == "latest" else root / checkpoint
    if ckpt is None or not (ckpt / "meta.json").is_file():
        raise FileNotFoundError(f"no complete checkpoint {checkpoint!r} in {root}")
    _, ema_state, _, meta = load_checkpoint(ckpt)
    codec = load_codec(Path(run["feature_dir"]) / "codec")
    c = run["config"]
    seconds = c["data"]["seconds"]
    return save_model_dir(
        out,
        model_state=ema_state,
        spec=run["model"],
        codec=codec,
        sampling={"sampler": c["demo"]["sampler"], "schedule": c["demo"]["schedule"], "num_steps": c["demo"]["steps"],
                  "guidance_scale": c["demo"]["guidance_scale"], "sigma_min": c["model"]["sigma_min"],
                  "sigma_max": c["model"]["sigma_max"]},
        audio={"sample_rate": codec.sample_rate, "seconds": seconds, "frames": frames_for_seconds(codec, seconds),
               "codec": codec.name, "vocoder": "griffin_lim" if codec.name == "mel" else "none"},
        source={"name": c["name"], "run_dir": str(run_dir.resolve()), "checkpoint": ckpt.name, "step": meta["step"],
                "samples": meta.get("samples"), "data_root": c["data"]["root"], "layout": c["data"]["layout"]},
    )
