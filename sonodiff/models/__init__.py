"""Models that ship with sonodiff: each a folder ``sonodiff/models/<name>/`` written by ``sonodiff export``
(config.json, model.safetensors, codec/) plus a ``MODEL_CARD.md``.

``resolve_model(name_or_path)`` accepts a shipped name or any exported directory.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["MODELS_DIR", "DEFAULT_TEXT_MODEL", "list_models", "resolve_model", "default_model"]

MODELS_DIR = Path(__file__).resolve().parent
DEFAULT_TEXT_MODEL = "corpus_sfx_latent"  # what `sonodiff generate "..."` uses when it is shipped


def list_models(kind: str | None = "diffusion") -> dict[str, dict]:
    """Shipped models of ``kind`` ("diffusion", "vocoder", "clap"; None = all): name -> summary (kind, conditioning,
    modality, sample rate and seconds or image size, labels; a vocoder: its kind, sample rate and mel bins)."""
    out = {}
    for d in sorted(MODELS_DIR.iterdir()):
        cfg = d / "config.json"
        if d.is_dir() and cfg.is_file():
            c = json.loads(cfg.read_text())
            k = c.get("kind", "diffusion")
            if kind is not None and k != kind:
                continue
            if k == "clap":
                modality = c["clap"].get("modality", "audio")
                out[d.name] = {"path": str(d), "kind": "clap", "modality": modality,
                               **({"image_size": [c["clap"]["channels"], c["clap"]["image_height"],
                                                  c["clap"]["image_width"]]} if modality == "image"
                                  else {"sample_rate": c["clap"]["sample_rate"]}),
                               "embed_dim": c["clap"]["embed_dim"], "steps_trained": c["source"].get("step")}
                continue
            if k == "autoencoder":
                out[d.name] = {"path": str(d), "kind": "autoencoder", "autoencoder": c["autoencoder"],
                               "latent_channels": c["config"]["latent_channels"],
                               "factor": 2 ** (len(c["config"]["channels"]) - 1),
                               "steps_trained": c["source"].get("step")}
                continue
            if k == "vocoder":
                out[d.name] = {"path": str(d), "kind": "vocoder", "vocoder": c["vocoder"],
                               "sample_rate": c["mel"]["sample_rate"], "n_mels": c["mel"]["n_mels"],
                               "steps_trained": c["source"].get("step")}
                continue
            cond = c["model"]["conditioning"]
            out[d.name] = {
                "kind": "diffusion",
                "path": str(d),
                "conditioning": cond["type"],
                "labels": cond.get("config", {}).get("labels"),
                "modality": "image" if "image" in c else "audio",
                **({"image_size": [c["image"]["channels"], c["image"]["height"], c["image"]["width"]]} if "image" in c
                   else {"sample_rate": c["audio"]["sample_rate"], "seconds": c["audio"]["seconds"]}),
                "steps_trained": c["source"].get("step"),
            }
    return out


def default_model() -> str:
    """The shipped text-to-audio model if present, else the only/first shipped model."""
    models = list_models()
    if DEFAULT_TEXT_MODEL in models:
        return DEFAULT_TEXT_MODEL
    if models:
        return next(iter(models))
    raise FileNotFoundError(f"no shipped models in {MODELS_DIR}; pass --model DIR (an exported model directory)")


def resolve_model(name_or_path: str | Path) -> Path:
    """A shipped model name or a directory -> the directory. Unknown names list the shipped ones."""
    p = Path(name_or_path)
    if p.is_dir():
        return p
    if isinstance(name_or_path, str) and "/" not in name_or_path and (MODELS_DIR / name_or_path).is_dir():
        return MODELS_DIR / name_or_path
    raise FileNotFoundError(f"model {str(name_or_path)!r} is neither a directory nor a shipped model; shipped: "
                            f"{sorted(list_models(None))}")
