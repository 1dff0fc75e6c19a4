"""The training engine: ``sonodiff train RECIPE.toml --out RUN_DIR`` and ``sonodiff.training.train(config, run_dir)``.

One loop for every trainable part; the recipe's ``task`` (:mod:`sonodiff.training.task`) says what is trained
(a diffusion model, a vocoder, ...). Read top to bottom: set up (distributed, device, the task's data and
modules, one AdamW per task optimizer, EMA), resume if RUN_DIR has a checkpoint, then for each optimizer step
and each of the task's phases at that step (a GAN: discriminators, then generator): micro-batches -> loss ->
backward -> guard -> clip -> step; then EMA (and the post-hoc EMA profiles of train.posthoc_ema) -> log /
post-hoc EMA snapshot / validate / checkpoint / demo. Multi-GPU and multi-node through torchrun (DDP); each rank
takes a contiguous slice of the global batch, and all randomness is a function of (seed, sample
position), so W ranks reproduce one process with the same global batch and a resumed run reproduces
an uninterrupted one. The two draws that cannot take a generator (parameter initialisation in module
constructors, dropout inside the network) run in a scoped RNG (:func:`_rng_scope`): torch's global
generators are forked, seeded from (seed, step, rank) and restored, so training never changes the caller's
random state.
"""

from __future__ import annotations

import json
import math
import os
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from sonodiff.training.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    load_checkpoint_weights,
    prune_checkpoints,
    save_best,
    save_checkpoint,
)
from sonodiff.training.config import Config
from sonodiff.training.data import batch_positions
from sonodiff.training.ema import EMA
from sonodiff.training.logging import MetricsLogger
from sonodiff.training.task import make_task
from sonodiff.training.posthoc_ema import (
    PowerEMA,
    pack_power_emas,
    profile_name,
    save_snapshot,
    unpack_power_emas,
)
from sonodiff.utils.atomic import atomic_write_json
from sonodiff.utils.cpu import resolve_precision

__all__ = ["train", "TrainResult", "NonFiniteError"]

class NonFiniteError(RuntimeError):
    """Too many consecutive steps with non-finite loss or gradients."""


@dataclass(frozen=True)
class TrainResult:
    run_dir: str
    step: int
    losses: tuple[float, ...]  # mean training loss of every optimizer step run in this call
    skipped_steps: int
    checkpoint: str


# ----------------------------------------------------------------------------------------------- setup
def _distributed() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and os.environ.get("SONODIFF_BACKEND") != "gloo" else "gloo"
        dist.init_process_group(backend)
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))
    return 0, 1, 0


def _device(choice: str, local_rank: int) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("train.device='cuda' but no CUDA device is available; use 'cpu' or 'auto'")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def _lr_factor(step: int, cfg: Config) -> float:
    o, total = cfg.optim, cfg.train.steps
    if o.warmup_steps and step < o.warmup_steps:
        return (step + 1) / o.warmup_steps
    if o.schedule == "constant":
        return 1.0
    t = (step - o.warmup_steps) / max(1, total - o.warmup_steps)
    return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


@contextmanager
def _rng_scope(seed: int, device: torch.device):
    """Run a block with torch's global generators (the CPU's and ``device``'s) seeded to ``seed``, then restore them.

    For the draws that take no generator argument: parameter initialisation inside module constructors and
    ``nn.Dropout`` in the network. Their values stay a function of the seed (bit-exact resume, identical init on
    every rank), and the caller's random state is left as it was.
    """
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield


def _step_seed(cfg: Config, step: int, rank: int) -> int:
    return cfg.train.seed + 1_000_003 * step + 7919 * rank  # dropout inside the network at (step, rank)


def _check_resume_config(run_dir: Path, cfg: Config, task) -> None:
    """Refuse to resume RUN_DIR with a config whose task or the task's fixed sections (diffusion: data, codec,
    model, conditioning) differ from the run's."""
    path = run_dir / "config.json"
    if not path.is_file():
        return
    saved = json.loads(path.read_text())["config"]
    now = cfg.to_dict()
    defaults = Config().to_dict()  # a key added since the run was made holds its default there
    diffs = []
    if saved.get("task", "diffusion") != now["task"]:
        diffs.append(f"task: run has {saved.get('task', 'diffusion')!r}, now {now['task']!r}")
    for section in task.resume_fixed:
        a, b = {**defaults.get(section, {}), **saved.get(section, {})}, now.get(section, {})
        free = task.resume_free.get(section, ())
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key) and key not in free:
                diffs.append(f"{section}.{key}: run has {a.get(key)!r}, now {b.get(key)!r}")
    if diffs:
        raise ValueError(f"{run_dir} holds a run with a different config, so its checkpoints cannot be resumed "
                         f"({'; '.join(diffs)}); use a new --out directory or the run's own settings")


# ----------------------------------------------------------------------------------------------- train
def train(config: Config, run_dir: str | Path, *, dry_run: bool = False, log=print) -> TrainResult:
    cfg, run_dir = config, Path(run_dir)
    owns_group = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized()
    rank, world, local_rank = _distributed()
    is_main = rank == 0
    log = log if is_main else (lambda *a, **k: None)
    device = _device(cfg.train.device, local_rank)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = cfg.train.tf32

    # data and modules (the task's)
    task = make_task(cfg, run_dir, device, rank, world, log)
    task.prepare()
    if dist.is_initialized():
        dist.barrier()  # rank 0 prepared the data
    with _rng_scope(cfg.train.seed, torch.device("cpu")):  # parameter initialisation: identical on every rank
        task.setup()
    model = task.model
    log(task.describe())
    groups = task.optimizers()
    if dry_run:
        return _dry_run(cfg, task, groups, run_dir, log)

    opts = {name: torch.optim.AdamW(params, **task.optimizer_options(name), fused=device.type == "cuda")
            for name, params in groups.items()}
    base_lr = {name: [g["lr"] for g in o.param_groups] for name, o in opts.items()}
    ema_src = task.ema_module()
    ema = EMA(ema_src, cfg.train.ema_half_life, cfg.train.ema_rampup)
    pemas = [PowerEMA(ema_src, s) for s in cfg.train.posthoc_ema]  # post-hoc EMA profiles (EDM2); [] = off
    precision, why = resolve_precision(cfg.train.precision, device.type,
                                       device.type == "cuda" and torch.cuda.is_bf16_supported())
    log(why)
    scalers = {name: torch.amp.GradScaler(device.type, enabled=precision == "fp16") for name in opts}
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    # resume
    step, samples, bad_run, skipped, best = 0, 0, 0, 0, math.inf
    seconds_before = 0.0  # wall seconds of the loop in earlier sessions of this run (resumes add up)
    ckpt_root = run_dir / "checkpoints"
    latest = latest_checkpoint(ckpt_root)
    if latest is not None:
        _check_resume_config(run_dir, cfg, task)
        ms, es, ts, meta = load_checkpoint(latest, device)
        model.load_state_dict(ms)
        ema.load_state_dict(es)
        _load_optimizers(ts, opts, scalers, latest)
        step, samples, skipped, best = int(ts["step"]), int(ts["samples"]), int(ts["skipped"]), float(ts["best"])
        seconds_before = float(ts.get("train_seconds", 0.0))  # absent in checkpoints of older runs
        if pemas:
            _resume_power_emas(latest, ts, pemas, step, device)
        log(f"resumed from {latest} at step {step}")
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / "config.json", {"config": cfg.to_dict(), "model": task.spec,
                                                    **getattr(task, "run_extra", {})})
        task.save_run_files()
    logger = MetricsLogger(run_dir, enabled=is_main, tensorboard=cfg.train.tensorboard)

    nets = {}
    for name, module in task.forward_modules().items():
        wrapped = module
        if world > 1:
            wrapped = torch.nn.parallel.DistributedDataParallel(
                module, device_ids=[local_rank] if device.type == "cuda" else None)
        nets[name] = torch.compile(wrapped) if cfg.train.compile else wrapped
    task.attach(nets)
    ddps = [n for n in nets.values() if isinstance(getattr(n, "_orig_mod", n), torch.nn.parallel.DistributedDataParallel)]
    model.train()
    stop = _StopFlag()  # SIGTERM / SIGINT: finish the step, checkpoint it, return
    losses: list[float] = []
    acc, t_last = cfg.optim.accumulate, time.perf_counter()
    t_start = t_last
    all_params = [p for params in groups.values() for p in params]

    def save(vloss):  # every checkpoint records the run's training wall time so far (learning curves use it)
        return _save(ckpt_root, step, model, ema, opts, scalers, samples, skipped, best, losses, vloss,
                     seconds_before + time.perf_counter() - t_start, pemas)

    pbar = _progress(cfg, step, is_main)
    while step < cfg.train.steps:
        factor = _lr_factor(step, cfg)
        for name, o in opts.items():
            for group, lr in zip(o.param_groups, base_lr[name]):
                group["lr"] = lr * factor
        phases = task.phases(step)
        batches: list = [None] * acc
        states: list[dict] = [{"step": step, "phases": phases} for _ in range(acc)]
        phase_loss, gnorms, metrics, failed = {}, {}, {}, None
        with _rng_scope(_step_seed(cfg, step, rank), device):  # dropout inside the networks
            for phase in phases:
                step_loss = torch.zeros((), device=device)
                for micro in range(acc):
                    if batches[micro] is None:
                        batches[micro] = task.batch(batch_positions(step, cfg.train.batch_size, micro, acc, rank, world))
                    with ExitStack() as sync:
                        if world > 1 and micro < acc - 1:
                            for d in ddps:
                                sync.enter_context(getattr(d, "_orig_mod", d).no_sync())
                        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                            per_ex, mets = task.loss(phase, batches[micro], states[micro])
                        scalers[phase].scale(per_ex.mean() / acc).backward()
                    step_loss += per_ex.detach().mean() / acc
                    for k, (sm, n) in mets.items():
                        if k in metrics:
                            metrics[k][0] += sm.detach().float()
                            metrics[k][1] += n.detach().float()
                        else:
                            metrics[k] = [sm.detach().float().clone(), n.detach().float().clone()]
                if world > 1:
                    dist.all_reduce(step_loss)
                    step_loss /= world
                opt, params = opts[phase], groups[phase]
                scalers[phase].unscale_(opt)
                gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else math.inf)
                if not (torch.isfinite(step_loss) and torch.isfinite(gnorm)):
                    failed = (phase, step_loss, gnorm)
                    break
                scalers[phase].step(opt)
                scalers[phase].update()
                for p in all_params:  # the next phase starts from clean gradients (a GAN's generator loss also
                    p.grad = None     # reaches the discriminators)
                phase_loss[phase], gnorms[phase] = step_loss, gnorm
        if failed is not None:
            phase, bad_loss, bad_norm = failed
            for p in all_params:
                p.grad = None
            scalers[phase].update()
            skipped += 1
            bad_run += 1
            where = f" in phase {phase!r}" if len(opts) > 1 else ""
            log(f"step {step}: non-finite loss ({bad_loss.item()}) or grad norm ({bad_norm.item()}){where}; step skipped")
            if bad_run >= cfg.train.max_bad_steps:
                # Skipped steps never touched the weights, so the current state is the last good one: save it.
                path = save(None) if is_main else None
                raise NonFiniteError(
                    f"{bad_run} consecutive non-finite steps (after step {step}); aborting. The last good state is "
                    f"saved in {path}; lower optim.lr, raise optim.warmup_steps or use precision='fp32'")
            continue
        bad_run = 0
        samples += cfg.train.batch_size
        ema.update(ema_src, cfg.train.batch_size, samples)
        step += 1
        for pe in pemas:
            pe.update(ema_src, step)
        losses.append(phase_loss[phases[-1]].item())
        if pbar is not None:
            pbar.update(1)
            pbar.set_postfix(loss=f"{losses[-1]:.4f}")

        if step % cfg.train.log_every == 0 or step == cfg.train.steps:
            now = time.perf_counter()
            rate = cfg.train.log_every * cfg.train.batch_size / max(now - t_last, 1e-9)
            t_last = now
            first = next(iter(opts))
            scalars = {"loss": losses[-1], "grad_norm": gnorms[phases[-1]].item(),
                       "lr": opts[first].param_groups[0]["lr"], "examples_per_s": rate, "skipped_steps": skipped}
            if len(opts) > 1:
                for ph in phases:
                    scalars[f"loss/{ph}"] = phase_loss[ph].item()
                    scalars[f"grad_norm/{ph}"] = gnorms[ph].item()
            if metrics and world > 1:
                flat = torch.stack([t for pair in metrics.values() for t in pair])
                dist.all_reduce(flat)
                for i, k in enumerate(metrics):
                    metrics[k] = [flat[2 * i], flat[2 * i + 1]]
            for k, (sm, n) in metrics.items():
                if n.item() > 0:
                    scalars[k] = sm.item() / n.item()
            if device.type == "cuda":
                scalars["memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
            logger.scalars(step, scalars)
        if pemas and is_main and (step % cfg.train.posthoc_ema_every == 0 or step == cfg.train.steps):
            for pe in pemas:  # never pruned: each snapshot is a basis profile of the post-hoc reconstruction
                save_snapshot(run_dir / "posthoc_ema", pe)
        vloss = None
        if cfg.train.valid_every and step % cfg.train.valid_every == 0:
            vloss = task.validate(ema.model)
            if vloss is not None:
                logger.scalars(step, {"valid_loss": vloss})
        if step % cfg.train.checkpoint_every == 0 or step == cfg.train.steps:
            if is_main:
                ckpt = save(vloss)
                if vloss is not None and vloss < best:
                    best = vloss
                    save_best(ckpt_root, ckpt, vloss)
                prune_checkpoints(ckpt_root, cfg.train.keep_last, keep=task.protected_checkpoints())
            if dist.is_initialized():
                dist.barrier()
        if stop.requested(world, device):
            if is_main:
                save(vloss)
                log(f"stopped by signal at step {step}; checkpoint saved, run the same command to resume")
            break
        if is_main and ((cfg.demo.every and step % cfg.demo.every == 0) or step == cfg.train.steps):
            task.demo(ema.model, step, logger)
    stop.restore()
    if pbar is not None:
        pbar.close()
    logger.close()
    final = latest_checkpoint(ckpt_root)
    if owns_group:
        # tear the process group down on every rank together: left to interpreter exit, gloo's threads can
        # abort a rank ("terminate called without an active exception", exit -6) after a finished run
        dist.barrier()
        dist.destroy_process_group()
    return TrainResult(str(run_dir), step, tuple(losses), skipped, str(final) if final else "")


# ----------------------------------------------------------------------------------------------- helpers
class _StopFlag:
    """Turns SIGTERM / SIGINT into a request honoured after the current step (all ranks agree on it)."""

    def __init__(self) -> None:
        import signal
        import threading

        self.flag = False
        self._old = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.flag = True

    def requested(self, world: int, device) -> bool:
        if world == 1:
            return self.flag
        t = torch.tensor([1.0 if self.flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def restore(self) -> None:
        import signal

        for sig, old in self._old.items():
            signal.signal(sig, old)


def _save(ckpt_root, step, model, ema, opts, scalers, samples, skipped, best, losses, vloss, train_seconds,
          pemas=()) -> Path:
    trainer_state = {"step": step, "samples": samples, "skipped": skipped, "best": best, "train_seconds": train_seconds}
    if list(opts) == ["model"]:  # one optimizer: the keys every run before the task engine wrote
        trainer_state["optimizer"], trainer_state["scaler"] = opts["model"].state_dict(), scalers["model"].state_dict()
    else:
        trainer_state["optimizers"] = {k: o.state_dict() for k, o in opts.items()}
        trainer_state["scalers"] = {k: sc.state_dict() for k, sc in scalers.items()}
    extra = None
    if pemas:  # the power-function averages, so that a resumed run writes the same snapshots
        trainer_state["posthoc_ema"] = {"sigma_rel": [pe.sigma_rel for pe in pemas], "t": step}
        extra = {"posthoc_ema": pack_power_emas(pemas)}
    return save_checkpoint(
        ckpt_root, step, model_state=model.state_dict(), ema_state=ema.state_dict(), trainer_state=trainer_state,
        meta={"samples": samples, "loss": losses[-1] if losses else None, "valid_loss": vloss,
              "train_seconds": round(train_seconds, 2)}, extra_weights=extra)


def _load_optimizers(ts: dict, opts: dict, scalers: dict, ckpt: Path) -> None:
    """Optimizer and loss-scaler states from a checkpoint's trainer state (either layout of :func:`_save`)."""
    if "optimizer" in ts:
        saved_opts, saved_scalers = {"model": ts["optimizer"]}, {"model": ts["scaler"]}
    else:
        saved_opts, saved_scalers = ts["optimizers"], ts["scalers"]
    if set(saved_opts) != set(opts):
        raise ValueError(f"{ckpt} holds the optimizers {sorted(saved_opts)} but this task steps {sorted(opts)}; "
                         "the checkpoint belongs to another kind of run")
    for k, o in opts.items():
        o.load_state_dict(saved_opts[k])
        scalers[k].load_state_dict(saved_scalers[k])


def _resume_power_emas(ckpt: Path, ts: dict, pemas: list, step: int, device) -> None:
    """Load the post-hoc EMA profiles from checkpoint ``ckpt``; refuse profiles the run did not average from step 1."""
    saved = ts.get("posthoc_ema")
    if saved is None:
        if step == 0:
            return  # nothing averaged yet: the profiles start fresh, as in an uninterrupted run
        raise ValueError(f"{ckpt} was saved by a run without post-hoc EMA (train.posthoc_ema was empty), but the config "
                         f"now asks for train.posthoc_ema={[pe.sigma_rel for pe in pemas]}: a power-function average "
                         "must start at step 1, so it cannot be turned on at step "
                         f"{step}; use a new --out directory or leave train.posthoc_ema empty for this run")
    have = {profile_name(s) for s in saved["sigma_rel"]}
    new = [pe.sigma_rel for pe in pemas if profile_name(pe.sigma_rel) not in have]
    if new:
        raise ValueError(f"{ckpt} holds the post-hoc EMA profiles sigma_rel={list(saved['sigma_rel'])}, but the config "
                         f"adds {new}: a power-function average must start at step 1, so profiles cannot be added at "
                         f"step {step}; use the run's profiles (or a subset) or a new --out directory")
    if int(saved["t"]) != step:
        raise ValueError(f"{ckpt}: its post-hoc EMA profiles have averaged {saved['t']} steps but the checkpoint is at "
                         f"step {step}; the checkpoint is inconsistent (resume from an earlier one)")
    unpack_power_emas(pemas, load_checkpoint_weights(ckpt, "posthoc_ema", device), step)


def _progress(cfg: Config, step: int, is_main: bool):
    if not (cfg.train.progress and is_main):
        return None
    from tqdm import tqdm

    return tqdm(total=cfg.train.steps, initial=step, desc="train", unit="step", dynamic_ncols=True)


def _dry_run(cfg: Config, task, groups: dict, run_dir, log) -> TrainResult:
    """Check config and data, time a few steps of every phase, print a step-time estimate; nothing is saved."""
    opts = {k: torch.optim.AdamW(v, lr=cfg.optim.lr) for k, v in groups.items()}
    per = cfg.train.batch_size // cfg.optim.accumulate
    task.attach(task.forward_modules())
    times = []
    for i in range(3):
        t0 = time.perf_counter()
        batch, state = task.batch(range(i * per, (i + 1) * per)), {"step": i, "phases": task.phases(i)}
        with _rng_scope(_step_seed(cfg, i, 0), task.device):
            for phase in task.phases(i):
                task.loss(phase, batch, state)[0].mean().backward()
                opts[phase].step()
                for o in opts.values():
                    o.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    t = min(times[1:]) * cfg.optim.accumulate
    log(f"dry run: {t:.3f} s per optimizer step -> about {t * cfg.train.steps / 60:.1f} min for {cfg.train.steps} steps "
        f"on {task.device}")
    return TrainResult(str(run_dir), 0, (), 0, "")
