"""Exported model directories: what `sonodiff export` writes and `Pipeline.from_pretrained` reads.

::

    MODEL_DIR/
        config.json          {"format": "sonodiff-model", "format_version": 1, "model": {network, network_config,
                              param, sigma_data, conditioning}, "sampling": {...}, "audio" or "image": {...}, "source": {...}}
        model.safetensors    EMA weights of the denoiser and of the trainable conditioner parts
        codec/               codec config + fitted statistics (config.json, stats.safetensors)

Frozen pretrained text encoders are not copied: ``model.conditioning`` records where to load them from.
All files are written atomically; a missing or corrupt file gives an error naming it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from sonodiff.utils.atomic import atomic_save_tensors, atomic_write_json

__all__ = ["FORMAT", "FORMAT_VERSION", "save_model_dir", "load_model_dir", "weights_hash"]

FORMAT = "sonodiff-model"
FORMAT_VERSION = 1


def weights_hash(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def save_model_dir(out: str | Path, *, model_state: dict, spec: dict, codec, sampling: dict, source: dict,
                   audio: dict | None = None, image: dict | None = None) -> Path:
    """Write a model directory. The section named after the codec's modality (``audio``: rate, lengths, vocoder;
    ``image``: channels and size) must be given, and only that one."""
    from sonodiff import __version__

    sections = {k: v for k, v in (("audio", audio), ("image", image)) if v is not None}
    if list(sections) != [codec.modality]:
        raise ValueError(f"a {codec.modality} model directory takes the {codec.modality!r} section, got "
                         f"{sorted(sections) or 'none'}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_save_tensors(out / "model.safetensors", model_state)
    codec.save(out / "codec")
    atomic_write_json(out / "config.json", {
        "format": FORMAT, "format_version": FORMAT_VERSION, "sonodiff_version": __version__,
        "model": spec, "sampling": sampling, **sections, "source": source,
        "weights_sha256_16": weights_hash(out / "model.safetensors"),
    })
    return out


def load_model_dir(path: str | Path, device: torch.device | str = "cpu"):
    """(DiffusionModel in eval mode, codec, config dict) of an exported directory."""
    from sonodiff.audio.codecs import load_codec
    from sonodiff.core.denoiser import Preconditioned
    from sonodiff.models.diffusion import DiffusionModel, conditioner_from_spec
    from sonodiff.nn import build_network
    from sonodiff.utils.modules import load_weights

    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"model directory {str(p)!r} does not exist")
    cfg_path = p / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path} is missing: {p} is not an exported sonodiff model (see `sonodiff export`)")
    try:
        cfg = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{cfg_path} is not valid JSON ({e})") from None
    if cfg.get("format") != FORMAT:
        raise ValueError(f"{cfg_path}: format {cfg.get('format')!r} is not {FORMAT!r}")
    if cfg.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{cfg_path}: format_version {cfg.get('format_version')} is not supported "
                         f"(this sonodiff reads {FORMAT_VERSION})")
    m = cfg["model"]
    net = build_network(m["network"], m["network_config"])
    conditioner = conditioner_from_spec(m["conditioning"])
    den = Preconditioned(net, m["param"], sigma_data=m["sigma_data"])
    model = DiffusionModel(den, conditioner)
    load_weights(model, p / "model.safetensors", "the architecture in config.json")
    codec = load_codec(p / "codec")
    model.to(device).eval()
    return model, codec, cfg
