"""The task interface of the training engine: what differs between trainable parts.

The engine (:mod:`sonodiff.training.loop`) owns everything every part needs once: distributed set-up, the step
loop, gradient accumulation, autocast and loss scaling, the non-finite guard, gradient clipping, the LR schedule,
EMA and post-hoc EMA, atomic checkpoints with exact resume, SIGTERM, TensorBoard / metrics.jsonl and the
progress bar. A task says what is trained and how (``task`` in a recipe names one of
:data:`sonodiff.training.tasks.TASKS`):

- :meth:`Task.setup` builds the data and ``self.model`` (every trained module; parameter initialisation runs in
  the engine's seeded RNG scope, so it is the same on every rank and on resume);
- :meth:`Task.optimizers`: optimizer name -> the parameters it steps (one AdamW each, in this order);
  :meth:`Task.phases`: which of them step at a given step, in order (a GAN: discriminators, then generator);
- :meth:`Task.batch`: the examples at global sample positions (all randomness a function of (seed, position));
- :meth:`Task.loss`: one phase's per-example loss ``[B]`` and named metrics, from ``self.nets`` (the modules of
  :meth:`Task.forward_modules` as the engine wrapped them: DDP and ``torch.compile``); ``state`` is a dict kept
  per micro-batch across the phases of one step, holding ``step`` and ``phases`` (a GAN keeps the generator's
  output there too);
- :meth:`Task.ema_module`: what the EMA averages and export writes;
- :meth:`Task.validate`, :meth:`Task.demo`, :meth:`Task.save_run_files`: optional hooks.

A metric is ``name -> (sum, count)`` tensors; the engine adds them up over micro-batches and ranks and logs
sum / count where count > 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["Task", "make_task"]


class Task:
    """Base class; see the module docstring. Subclasses set ``name`` and ``resume_fixed``."""

    name: str = ""
    # config sections whose change makes a run's checkpoints unusable (others, e.g. steps or logging, may change)
    resume_fixed: tuple[str, ...] = ()
    # keys of those sections that may change anyway (section -> keys)
    resume_free: dict[str, tuple[str, ...]] = {"data": ("root", "cache_dir", "prepare_workers")}

    def __init__(self, cfg, run_dir: Path, device: torch.device, rank: int, world: int, log) -> None:
        self.cfg, self.run_dir, self.device, self.rank, self.world, self.log = cfg, Path(run_dir), device, rank, world, log
        self.model: nn.Module | None = None
        self.spec: dict = {}  # the model's construction spec, saved in RUN_DIR/config.json ("model") for export
        self.nets: dict[str, Any] = {}

    # --- set-up -------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Data preparation before the model exists (rank 0 fills caches; the engine synchronises ranks)."""

    def setup(self) -> None:
        """Build the data and ``self.model`` (called inside the engine's seeded RNG scope)."""
        raise NotImplementedError

    def describe(self) -> str:
        """One log line about the data and the model."""
        n = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        return f"model {n / 1e6:.2f} M trainable parameters"

    def forward_modules(self) -> dict[str, nn.Module]:
        """The modules whose forward the losses call, to be wrapped by DDP / compile (default: the model)."""
        return {"model": self.model}

    def attach(self, nets: dict[str, Any]) -> None:
        self.nets = nets

    def ema_module(self) -> nn.Module:
        """The module the EMA (and post-hoc EMA) averages and export writes (default: the whole model)."""
        return self.model

    def optimizers(self) -> dict[str, list[nn.Parameter]]:
        """Optimizer name -> its parameters (default: one optimizer ``"model"`` over every trainable one)."""
        return {"model": [p for p in self.model.parameters() if p.requires_grad]}

    def optimizer_options(self, name: str) -> dict:
        """AdamW options of optimizer ``name`` (default: the recipe's ``optim`` section)."""
        o = self.cfg.optim
        return {"lr": o.lr, "betas": o.betas, "eps": o.eps, "weight_decay": o.weight_decay}

    def phases(self, step: int) -> tuple[str, ...]:
        """The optimizers that step at ``step`` (0-based), in order; the last one's loss is the step's loss."""
        return tuple(self.optimizers())

    # --- a step -------------------------------------------------------------------------------
    def batch(self, positions: range) -> Any:
        raise NotImplementedError

    def batch_size_of(self, batch) -> int:
        return len(batch[0]) if isinstance(batch, (tuple, list)) else len(batch)

    def loss(self, phase: str, batch, state: dict) -> tuple[Tensor, dict[str, tuple[Tensor, Tensor]]]:
        """(per-example loss ``[B]``, metrics ``name -> (sum, count)``) of optimizer ``phase`` on ``batch``."""
        raise NotImplementedError

    # --- hooks ----------------------------------------------------------------------------------
    def protected_checkpoints(self) -> tuple[str, ...]:
        """Checkpoint folder names that pruning keeps (e.g. an autoguidance guide)."""
        return ()

    def save_run_files(self) -> None:
        """Files the run keeps beside its checkpoints (rank 0, once the run directory exists)."""

    def validate(self, ema_module: nn.Module) -> float | None:
        return None

    def demo(self, ema_module: nn.Module, step: int, logger) -> None:
        """Examples written at ``demo.every`` steps and at the end (rank 0)."""


def make_task(cfg, run_dir, device, rank: int, world: int, log) -> Task:
    """The task ``cfg.task`` names (:data:`sonodiff.training.tasks.TASKS`)."""
    from sonodiff.training.tasks import TASKS

    if cfg.task not in TASKS:
        raise ValueError(f"task={cfg.task!r} is not a registered task; valid: {sorted(TASKS)}")
    return TASKS[cfg.task](cfg, run_dir, device, rank, world, log)
