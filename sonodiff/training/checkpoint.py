"""Checkpoints: written atomically, loaded back exactly, last K and best kept.

Layout of ``RUN_DIR/checkpoints``::

    step_00000100/            one complete checkpoint
        model.safetensors     live weights
        ema.safetensors       EMA weights
        posthoc_ema.safetensors  (runs with train.posthoc_ema) the power-function EMA averages, for exact resume
        trainer_state.pt      optimizer, LR schedule, step, samples seen, data position, RNG states, guards
        meta.json             written last: its presence marks the checkpoint complete
    latest                    text file naming the newest complete checkpoint
    best/                     copy of the checkpoint with the lowest validation loss

A checkpoint is assembled in a hidden temporary folder and renamed into place (an atomic rename), and
``latest`` is replaced atomically after that, so a process killed at any moment leaves the previous
checkpoint loadable. Weights are safetensors; the trainer state is a ``torch.save`` dict of tensors and
numbers that this project writes itself and loads with ``weights_only=True``.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch

from sonodiff.utils.atomic import atomic_dir, atomic_write_text, recover_dir

__all__ = ["save_checkpoint", "load_checkpoint", "load_checkpoint_weights", "latest_checkpoint", "list_checkpoints",
           "prune_checkpoints", "save_best"]

_STEP_DIR = re.compile(r"^step_(\d{8})$")


def _state_dict_tensors(sd: dict) -> dict:
    return {k: v.detach().contiguous().cpu() for k, v in sd.items()}


_RESERVED = ("model", "ema")


def save_checkpoint(ckpt_root: str | Path, step: int, *, model_state: dict, ema_state: dict, trainer_state: dict,
                    meta: dict, extra_weights: dict[str, dict] | None = None) -> Path:
    """Write checkpoint ``step`` atomically under ``ckpt_root``; update ``latest``. Returns its folder.

    ``extra_weights``: more ``{name: {key: tensor}}`` written as ``<name>.safetensors`` in the same folder (read
    back with :func:`load_checkpoint_weights`), e.g. the post-hoc EMA averages.
    """
    from safetensors.torch import save_file

    root = Path(ckpt_root)
    name = f"step_{step:08d}"
    final = root / name
    extra = extra_weights or {}
    bad = [n for n in extra if n in _RESERVED or not n or "/" in n or n.startswith(".")]
    if bad:
        raise ValueError(f"extra_weights names {bad} are not allowed (not {list(_RESERVED)}, no '/', no leading '.')")
    with atomic_dir(final) as tmp:  # re-saving the same step (e.g. after a resume) replaces it
        save_file(_state_dict_tensors(model_state), str(tmp / "model.safetensors"))
        save_file(_state_dict_tensors(ema_state), str(tmp / "ema.safetensors"))
        for n, sd in extra.items():
            save_file(_state_dict_tensors(sd), str(tmp / f"{n}.safetensors"))
        torch.save(trainer_state, tmp / "trainer_state.pt")
        (tmp / "meta.json").write_text(json.dumps({**meta, "step": step}, indent=2) + "\n")
    atomic_write_text(root / "latest", name + "\n")
    return final


def list_checkpoints(ckpt_root: str | Path) -> list[Path]:
    """Complete checkpoints (with meta.json), oldest first."""
    root = Path(ckpt_root)
    if not root.is_dir():
        return []
    out = [p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name) and (p / "meta.json").is_file()]
    return sorted(out, key=lambda p: p.name)


def latest_checkpoint(ckpt_root: str | Path) -> Path | None:
    """The checkpoint named by ``latest`` if complete, else the newest complete one, else None."""
    root = Path(ckpt_root)
    pointer = root / "latest"
    if pointer.is_file():
        p = root / pointer.read_text().strip()
        if (p / "meta.json").is_file():
            return p
    ckpts = list_checkpoints(root)
    return ckpts[-1] if ckpts else None


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> tuple[dict, dict, dict, dict]:
    """(model_state, ema_state, trainer_state, meta) of one checkpoint folder."""
    from safetensors.torch import load_file

    p = Path(path)
    for f in ("model.safetensors", "ema.safetensors", "trainer_state.pt", "meta.json"):
        if not (p / f).is_file():
            raise FileNotFoundError(f"checkpoint {p} is incomplete: {f} is missing")
    model_state = load_file(str(p / "model.safetensors"), device=str(device))
    ema_state = load_file(str(p / "ema.safetensors"), device=str(device))
    trainer_state = torch.load(p / "trainer_state.pt", map_location=device, weights_only=True)
    meta = json.loads((p / "meta.json").read_text())
    return model_state, ema_state, trainer_state, meta


def load_checkpoint_weights(path: str | Path, name: str, device: torch.device | str = "cpu") -> dict:
    """The ``<name>.safetensors`` tensors of a checkpoint folder (see ``extra_weights`` of :func:`save_checkpoint`)."""
    from safetensors.torch import load_file

    f = Path(path) / f"{name}.safetensors"
    if not f.is_file():
        raise FileNotFoundError(f"checkpoint {path} has no {f.name}")
    return load_file(str(f), device=str(device))


def prune_checkpoints(ckpt_root: str | Path, keep_last: int, keep: tuple[str, ...] = ()) -> None:
    """Delete all but the newest ``keep_last`` complete checkpoints (and those named in ``keep``) and stale
    temporary folders."""
    root = Path(ckpt_root)
    if not root.is_dir():
        return
    recover_dir(root)  # a killed save leaves at most an .old-* copy of a folder: put it back, drop the rest
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    latest = latest_checkpoint(root)
    for p in list_checkpoints(root)[:-keep_last]:
        if p != latest and p.name not in keep:
            shutil.rmtree(p, ignore_errors=True)


def save_best(ckpt_root: str | Path, src: Path, value: float) -> None:
    """Copy checkpoint ``src`` to ``best/`` atomically (copy to a temp folder, then swap)."""
    with atomic_dir(Path(ckpt_root) / "best") as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        meta = json.loads((tmp / "meta.json").read_text())
        (tmp / "meta.json").write_text(json.dumps({**meta, "best_value": value}, indent=2) + "\n")
