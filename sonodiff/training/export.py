"""`sonodiff export RUN_DIR --out MODEL_DIR`: the inference directory of a training run (EMA weights).

Everything generation reads comes from the run's config (:func:`model_sections`): a re-export of the same run
writes the same ``config.json``, with no hand edits. Nothing machine-specific is recorded: the run directory
and the dataset are named by their folder names, never by absolute paths.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["export_run", "model_sections"]


def model_sections(config: dict, codec) -> dict[str, dict]:
    """The ``sampling`` and ``audio`` sections of an exported model's config.json, from a run's resolved
    config (``Config.to_dict()``) and its fitted codec: every default :class:`sonodiff.pipelines.Pipeline`
    generates with (sampler and its options, grid and its options, steps, guidance scale, interval and rescale,
    noise range, training length and the longest one-pass window)."""
    from sonodiff.models.diffusion import frames_for_seconds
    from sonodiff.training.config import sampling_defaults

    seconds = config["data"]["seconds"]
    window = config["demo"].get("max_window_seconds") or seconds
    if window < seconds:
        raise ValueError(f"demo.max_window_seconds={window} is shorter than the training length data.seconds={seconds}")
    return {
        "sampling": sampling_defaults(config),
        "audio": {"sample_rate": codec.sample_rate, "seconds": seconds, "frames": frames_for_seconds(codec, seconds),
                  "codec": codec.name, "vocoder": "griffin_lim" if codec.name == "mel" else "none",
                  "max_window_seconds": window},
    }


def export_run(run_dir: str | Path, out: str | Path, checkpoint: str = "latest") -> Path:
    """Export a run's EMA weights (``checkpoint``: "latest", "best" or a folder name such as step_00001000)."""
    from sonodiff.audio.codecs import load_codec
    from sonodiff.models.model_dir import save_model_dir
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
    # the run's own fitted codec (runs started before runs kept one: the feature cache's, as they were trained)
    codec = load_codec(run_dir / "codec" if (run_dir / "codec" / "config.json").is_file()
                       else Path(run["feature_dir"]) / "codec")
    c = run["config"]
    return save_model_dir(
        out,
        model_state=ema_state,
        spec=run["model"],
        codec=codec,
        **model_sections(c, codec),
        source={"name": c["name"], "run_dir": run_dir.resolve().name, "checkpoint": ckpt.name, "step": meta["step"],
                "samples": meta.get("samples"), "train_seconds": meta.get("train_seconds"),
                "data_root": Path(c["data"]["root"]).name, "layout": c["data"]["layout"]},
    )
