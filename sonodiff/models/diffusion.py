"""The diffusion model as trained, exported and loaded: ``DiffusionModel`` and what rebuilds it from a spec.

This module sits below both ``sonodiff.training`` (which builds and trains it) and ``sonodiff.pipelines``
(which loads and samples it), so neither imports the other to get at the model.

``DiffusionModel`` is the one module that is trained, averaged (EMA), checkpointed and exported: the
denoiser plus the *trainable* part of the conditioner (a class embedding, a timing MLP). Frozen
pretrained text encoders are held outside the module tree, so they are never in checkpoints, in the EMA
or in the optimizer; the exported model records where to load them from instead.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sonodiff.core.cond import Cond
from sonodiff.core.denoiser import Preconditioned

__all__ = ["DiffusionModel", "conditioner_from_spec", "example_frames", "example_shape", "frames_for_seconds"]


def frames_for_seconds(codec, seconds: float) -> int:
    """Length along the last axis of an audio codec's encoding of ``seconds`` of audio."""
    if codec.modality != "audio":
        raise ValueError(f"a {codec.modality} codec ({codec.name!r}) has no duration: its examples are "
                         f"{example_shape(codec, 0.0)}")
    n = int(round(seconds * codec.sample_rate))
    with torch.no_grad():
        return int(codec.analyze(torch.zeros(1, codec.channels, n)).shape[-1])


def example_shape(codec, seconds: float) -> tuple[int, ...]:
    """Shape ``[C, ..., last]`` of one model input: an audio codec's encoding of ``seconds`` of audio, or an image
    codec's fixed ``[C, H, W]`` (``seconds`` is not used)."""
    if codec.modality == "image":
        if codec.size is None:
            raise ValueError("an image codec needs a fixed size to train or generate: set codec.options height and "
                             "width (e.g. 28 and 28)")
        return (codec.channels, *codec.size)
    n = int(round(seconds * codec.sample_rate))
    with torch.no_grad():
        return tuple(codec.analyze(torch.zeros(1, codec.channels, n)).shape[1:])


def example_frames(codec, seconds: float) -> int:
    """Length of a model input along its last axis (audio frames or samples; image width)."""
    return int(example_shape(codec, seconds)[-1])


class DiffusionModel(nn.Module):
    """``denoiser`` (Preconditioned network) + ``conditioner`` (None for unconditional models).

    A trainable conditioner (class table, timing MLP) is a registered submodule: trained, averaged and saved
    with the network. A frozen pretrained encoder is kept *outside* the module tree (moved along by
    ``.to()``, shared, not copied, by ``deepcopy``), so it is never in the optimizer, the EMA or a checkpoint.
    ``cond(values, null)`` turns raw conditioning values (labels, captions) into a :class:`Cond`.
    """

    def __init__(self, denoiser: Preconditioned, conditioner: nn.Module | None) -> None:
        super().__init__()
        self.denoiser = denoiser
        if conditioner is not None and conditioner.trainable:
            self.conditioner = conditioner
        else:
            self.__dict__["conditioner"] = conditioner  # unregistered: frozen or absent

    @property
    def frozen_conditioner(self) -> nn.Module | None:
        c = self.__dict__.get("conditioner")
        return c

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        if self.frozen_conditioner is not None:
            self.frozen_conditioner._apply(fn)
        return self

    def __deepcopy__(self, memo):
        from sonodiff.utils.modules import deepcopy_sharing

        return deepcopy_sharing(self, memo, [self.frozen_conditioner] if self.frozen_conditioner is not None else [])

    def enable_text_memo(self) -> bool:
        """Remember each distinct text's encoding from now on (training: a data set's captions repeat every epoch,
        and a frozen encoder's output for a text never changes). Only for a frozen text encoder padding to the
        longest text of a batch, whose real tokens do not depend on the other rows; returns whether it is on."""
        from sonodiff.conditioning.text import TextEncoder

        c = self.frozen_conditioner
        on = isinstance(c, TextEncoder) and c.config.padding == "longest"
        self.__dict__["_text_memo"] = {} if on else None
        return on

    def _memo_cond(self, memo: dict, values: list, device) -> Cond:
        new = [v for v in dict.fromkeys(values) if v not in memo]
        if new:
            c = self.conditioner(_to_device(self.conditioner.tokenize(new), device))
            for i, v in enumerate(new):
                n = int(c.mask[i].sum())
                if not bool(c.mask[i, :n].all()):
                    raise ValueError("text memo: the tokenizer pads on the left; cannot keep per-text encodings")
                memo[v] = (c.tokens[i, :n].detach(), c.pooled[i].detach())
        L = max(memo[v][0].shape[0] for v in values)
        tokens = torch.stack([torch.nn.functional.pad(memo[v][0], (0, 0, 0, L - memo[v][0].shape[0])) for v in values])
        mask = torch.stack([torch.arange(L, device=tokens.device) < memo[v][0].shape[0] for v in values])
        return Cond(tokens=tokens, mask=mask, pooled=torch.stack([memo[v][1] for v in values]))

    def cond(self, values: list | None, null: Tensor | None = None, device=None) -> Cond | None:
        """Conditioning values (one per row) -> Cond on ``device``; rows with ``null`` True become null."""
        if self.conditioner is None:
            return None
        if values is None:
            raise ValueError("this model is conditional: give one conditioning value per example")
        memo = self.__dict__.get("_text_memo")
        if memo is not None:
            c = self._memo_cond(memo, list(values), device)
        else:
            c = self.conditioner(_to_device(self.conditioner.tokenize(list(values)), device))
        if null is not None:
            c = c.with_null(null.to(device=c.null_mask(c.batch_size).device))
        return c

    def forward(self, x0: Tensor, sigma: Tensor, noise: Tensor, mask: Tensor, values: list | None,
                null: Tensor | None) -> Tensor:
        """Per-example training loss ``[B]`` (DDP wraps this forward)."""
        cond = self.cond(values, null, device=x0.device)
        return self.denoiser.loss(x0, sigma=sigma, noise=noise, cond=cond, mask=mask)


def _to_device(batch, device):
    if device is None:
        return batch
    if isinstance(batch, Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def conditioner_from_spec(spec: dict) -> nn.Module | None:
    """Rebuild a conditioner from the spec stored in an exported model (weights are loaded with the model)."""
    if spec["type"] == "none":
        return None
    from sonodiff.conditioning.registry import from_config

    return from_config(spec["config"])
