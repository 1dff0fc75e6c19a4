"""The training loop: ``sonodiff train RECIPE.toml --out RUN_DIR`` and ``sonodiff.training.train(config, run_dir)``.

Read top to bottom: set up (distributed, device, data cache, model, optimizer, EMA), resume if RUN_DIR has
a checkpoint, then for each optimizer step: micro-batches -> loss -> backward -> guard -> clip -> step ->
EMA (and the post-hoc EMA profiles of train.posthoc_ema) -> log / post-hoc EMA snapshot / validate /
checkpoint / demo. Multi-GPU and multi-node through torchrun (DDP); each rank
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
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from sonodiff.core.schedules import sample_sigmas
from sonodiff.data.datasets import CachedDataset
from sonodiff.models.diffusion import frames_for_seconds
from sonodiff.training.build import (
    build_model,
    check_trainer_inputs,
    example_values,
    label_field,
    needs_labels,
)
from sonodiff.training.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    load_checkpoint_weights,
    prune_checkpoints,
    save_best,
    save_checkpoint,
)
from sonodiff.training.config import Config
from sonodiff.training.data import PositionOrder, batch_positions, example_generator
from sonodiff.training.ema import EMA
from sonodiff.training.logging import MetricsLogger
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

SIGMA_BUCKETS = (0.05, 0.3, 1.0, 5.0)  # edges of the per-noise-level loss buckets


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


def _prepare_data(cfg: Config, rank: int, log) -> Path:
    """Bring the feature cache up to date (rank 0; the others wait) and return its folder."""
    from sonodiff.audio.codecs import make_codec
    from sonodiff.data.cache import feature_dir, prepare

    codec = make_codec(cfg.codec.name, **cfg.codec.options)
    cache_dir = Path(cfg.data.cache_dir) if cfg.data.cache_dir else Path(cfg.data.root) / ".sonodiff_cache"
    if rank == 0:
        report = prepare(cfg.data.root, codec, cache_dir=cache_dir, layout=cfg.data.layout,
                         workers=cfg.data.prepare_workers, log=log, fit_split=cfg.data.split)
        log(f"feature cache: {report.summary()}")
        if report.bad:
            log(f"{len(report.bad)} bad entries skipped (listed in {report.cache_dir}/report.json)")
    if dist.is_initialized():
        dist.barrier()
    return feature_dir(cache_dir, codec)


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


# ----------------------------------------------------------------------------------------------- batches
def _values(ds: CachedDataset, examples: list, cfg: Config, model) -> list | None:
    """The conditioning value of each example (its field, or for timing its crop's start and length in seconds)."""
    if model.conditioner is None:
        return None
    fs = ds.frame_seconds if ds.codec.sample_rate else None  # frames of an image codec have no duration
    starts = [ex.start * fs if fs is not None else None for ex in examples]
    return example_values(model.conditioner, [ex.meta for ex in examples], starts, cfg.conditioning.field,
                          cfg.conditioning.fields)


def _make_batch(ds: CachedDataset, order: PositionOrder, positions: range, cfg: Config, model, device):
    """Examples, noise levels, noise and CFG-dropout flags for global sample ``positions``."""
    exs, sigmas, noises, drops = [], [], [], []
    m = cfg.model
    for p in positions:
        g = example_generator(cfg.train.seed, p)
        ex = ds.example(order(p), g)
        exs.append(ex)
        sigmas.append(sample_sigmas(m.density, 1, generator=g, **m.density_options))
        noises.append(torch.randn(ex.x0.shape, generator=g))
        drops.append(bool(torch.rand(1, generator=g) < cfg.conditioning.dropout))
    values = _values(ds, exs, cfg, model)
    return (torch.stack([e.x0 for e in exs]).to(device), torch.cat(sigmas).to(device), torch.stack(noises).to(device),
            torch.stack([e.mask for e in exs]).to(device), values, torch.tensor(drops, device=device))


def _bucket(sigma: torch.Tensor) -> torch.Tensor:
    return torch.bucketize(sigma.float(), torch.tensor(SIGMA_BUCKETS, device=sigma.device))


# sections whose change makes a run's checkpoints unusable (the others, e.g. steps or logging, may change)
_RESUME_FIXED = ("data", "codec", "model", "conditioning")


def _check_resume_config(run_dir: Path, cfg: Config) -> None:
    """Refuse to resume RUN_DIR with a config whose data, codec, model or conditioning differ from the run's."""
    path = run_dir / "config.json"
    if not path.is_file():
        return
    saved = json.loads(path.read_text())["config"]
    now = cfg.to_dict()
    defaults = Config().to_dict()  # a key added since the run was made holds its default there
    diffs = []
    for section in _RESUME_FIXED:
        a, b = {**defaults.get(section, {}), **saved.get(section, {})}, now.get(section, {})
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key) and not (section == "data" and key in ("root", "cache_dir", "prepare_workers")):
                diffs.append(f"{section}.{key}: run has {a.get(key)!r}, now {b.get(key)!r}")
    if diffs:
        raise ValueError(f"{run_dir} holds a run with a different config, so its checkpoints cannot be resumed "
                         f"({'; '.join(diffs)}); use a new --out directory or the run's own settings")


# ----------------------------------------------------------------------------------------------- train
def train(config: Config, run_dir: str | Path, *, dry_run: bool = False, log=print) -> TrainResult:
    cfg, run_dir = config, Path(run_dir)
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

    # data and model
    fdir = _prepare_data(cfg, rank, log)
    codec = _run_codec(run_dir, fdir, log)
    frames = frames_for_seconds(codec, cfg.data.seconds)
    ds = CachedDataset(fdir, cfg.data.split, frames, cfg.data.crop, pad=cfg.data.pad, max_items=cfg.data.max_items,
                       in_memory=True, codec=codec)
    order = PositionOrder(len(ds), cfg.train.seed)
    valid = _valid_set(cfg, fdir, frames, codec)
    labels = ds.labels(label_field(cfg.conditioning)) if needs_labels(cfg.conditioning) else None
    with _rng_scope(cfg.train.seed, torch.device("cpu")):  # parameter initialisation: identical on every rank
        model, spec = build_model(cfg, ds.shape, labels)
    check_trainer_inputs(model.conditioner)
    model.to(device)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log(f"{len(ds)} training examples of shape {list(ds.shape)}; model {n_params / 1e6:.2f} M trainable parameters")
    if dry_run:
        return _dry_run(cfg, ds, model, device, run_dir, log)

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.optim.lr, betas=cfg.optim.betas, eps=cfg.optim.eps,
                            weight_decay=cfg.optim.weight_decay, fused=device.type == "cuda")
    ema = EMA(model, cfg.train.ema_half_life, cfg.train.ema_rampup)
    pemas = [PowerEMA(model, s) for s in cfg.train.posthoc_ema]  # post-hoc EMA profiles (EDM2); [] = off
    precision, why = resolve_precision(cfg.train.precision, device.type,
                                       device.type == "cuda" and torch.cuda.is_bf16_supported())
    log(why)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    # resume
    step, samples, bad_run, skipped, best = 0, 0, 0, 0, math.inf
    seconds_before = 0.0  # wall seconds of the loop in earlier sessions of this run (resumes add up)
    ckpt_root = run_dir / "checkpoints"
    latest = latest_checkpoint(ckpt_root)
    if latest is not None:
        _check_resume_config(run_dir, cfg)
        ms, es, ts, meta = load_checkpoint(latest, device)
        model.load_state_dict(ms)
        ema.load_state_dict(es)
        opt.load_state_dict(ts["optimizer"])
        scaler.load_state_dict(ts["scaler"])
        step, samples, skipped, best = int(ts["step"]), int(ts["samples"]), int(ts["skipped"]), float(ts["best"])
        seconds_before = float(ts.get("train_seconds", 0.0))  # absent in checkpoints of older runs
        if pemas:
            _resume_power_emas(latest, ts, pemas, step, device)
        log(f"resumed from {latest} at step {step}")
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / "config.json", {"config": cfg.to_dict(), "model": spec, "feature_dir": str(fdir)})
        if not (run_dir / "codec" / "config.json").is_file():
            codec.save(run_dir / "codec")  # the statistics this run normalises with, for resume, demos and export
    logger = MetricsLogger(run_dir, enabled=is_main, tensorboard=cfg.train.tensorboard)

    ddp_model = model
    if world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None)
    fwd = torch.compile(ddp_model) if cfg.train.compile else ddp_model
    model.train()
    stop = _StopFlag()  # SIGTERM / SIGINT: finish the step, checkpoint it, return
    losses: list[float] = []
    acc, t_last = cfg.optim.accumulate, time.perf_counter()
    t_start = t_last

    def save(vloss):  # every checkpoint records the run's training wall time so far (learning curves use it)
        return _save(ckpt_root, step, model, ema, opt, scaler, samples, skipped, best, losses, vloss,
                     seconds_before + time.perf_counter() - t_start, pemas)

    pbar = _progress(cfg, step, is_main)
    while step < cfg.train.steps:
        for group in opt.param_groups:
            group["lr"] = cfg.optim.lr * _lr_factor(step, cfg)
        step_loss = torch.zeros((), device=device)
        bucket_sum = torch.zeros(len(SIGMA_BUCKETS) + 1, device=device)
        bucket_n = torch.zeros(len(SIGMA_BUCKETS) + 1, device=device)
        with _rng_scope(_step_seed(cfg, step, rank), device):  # dropout inside the network
            for micro in range(acc):
                pos = batch_positions(step, cfg.train.batch_size, micro, acc, rank, world)
                x0, sigma, noise, mask, values, drop = _make_batch(ds, order, pos, cfg, model, device)
                sync = nullcontext() if (world == 1 or micro == acc - 1) else ddp_model.no_sync()
                with sync, torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    per_ex = fwd(x0, sigma, noise, mask, values, drop)
                scaler.scale(per_ex.mean() / acc).backward()
                step_loss += per_ex.detach().mean() / acc
                b = _bucket(sigma)
                bucket_sum.index_add_(0, b, per_ex.detach().float())
                bucket_n.index_add_(0, b, torch.ones_like(per_ex.detach().float()))
        if world > 1:
            for t in (step_loss, bucket_sum, bucket_n):
                dist.all_reduce(t)
            step_loss /= world
        scaler.unscale_(opt)
        gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else math.inf)
        if not (torch.isfinite(step_loss) and torch.isfinite(gnorm)):
            opt.zero_grad(set_to_none=True)
            scaler.update()
            skipped += 1
            bad_run += 1
            log(f"step {step}: non-finite loss ({step_loss.item()}) or grad norm ({gnorm.item()}); step skipped")
            if bad_run >= cfg.train.max_bad_steps:
                # Skipped steps never touched the weights, so the current state is the last good one: save it.
                path = save(None) if is_main else None
                raise NonFiniteError(
                    f"{bad_run} consecutive non-finite steps (after step {step}); aborting. The last good state is "
                    f"saved in {path}; lower optim.lr, raise optim.warmup_steps or use precision='fp32'")
            continue
        bad_run = 0
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        samples += cfg.train.batch_size
        ema.update(model, cfg.train.batch_size, samples)
        step += 1
        for pe in pemas:
            pe.update(model, step)
        losses.append(step_loss.item())
        if pbar is not None:
            pbar.update(1)
            pbar.set_postfix(loss=f"{losses[-1]:.4f}")

        if step % cfg.train.log_every == 0 or step == cfg.train.steps:
            now = time.perf_counter()
            rate = cfg.train.log_every * cfg.train.batch_size / max(now - t_last, 1e-9)
            t_last = now
            scalars = {"loss": losses[-1], "grad_norm": gnorm.item(), "lr": opt.param_groups[0]["lr"],
                       "examples_per_s": rate, "skipped_steps": skipped}
            for i, (s, n) in enumerate(zip(bucket_sum.tolist(), bucket_n.tolist())):
                if n > 0:
                    scalars[f"loss_sigma_bucket/{_bucket_name(i)}"] = s / n
            if device.type == "cuda":
                scalars["memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
            logger.scalars(step, scalars)
        if pemas and is_main and (step % cfg.train.posthoc_ema_every == 0 or step == cfg.train.steps):
            for pe in pemas:  # never pruned: each snapshot is a basis profile of the post-hoc reconstruction
                save_snapshot(run_dir / "posthoc_ema", pe)
        if valid is not None and cfg.train.valid_every and step % cfg.train.valid_every == 0:
            vloss = _validate(ema.model, valid, cfg, device)
            logger.scalars(step, {"valid_loss": vloss})
        else:
            vloss = None
        if step % cfg.train.checkpoint_every == 0 or step == cfg.train.steps:
            if is_main:
                ckpt = save(vloss)
                if vloss is not None and vloss < best:
                    best = vloss
                    save_best(ckpt_root, ckpt, vloss)
                prune_checkpoints(ckpt_root, cfg.train.keep_last)
            if dist.is_initialized():
                dist.barrier()
        if stop.requested(world, device):
            if is_main:
                save(vloss)
                log(f"stopped by signal at step {step}; checkpoint saved, run the same command to resume")
            break
        if is_main and ((cfg.demo.every and step % cfg.demo.every == 0) or step == cfg.train.steps):
            from sonodiff.training.demo import write_demos

            write_demos(ema.model, cfg, codec, frames, step, run_dir, logger, device)
    stop.restore()
    if pbar is not None:
        pbar.close()
    logger.close()
    final = latest_checkpoint(ckpt_root)
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


def _save(ckpt_root, step, model, ema, opt, scaler, samples, skipped, best, losses, vloss, train_seconds,
          pemas=()) -> Path:
    trainer_state = {"optimizer": opt.state_dict(), "scaler": scaler.state_dict(), "step": step,
                     "samples": samples, "skipped": skipped, "best": best, "train_seconds": train_seconds}
    extra = None
    if pemas:  # the power-function averages, so that a resumed run writes the same snapshots
        trainer_state["posthoc_ema"] = {"sigma_rel": [pe.sigma_rel for pe in pemas], "t": step}
        extra = {"posthoc_ema": pack_power_emas(pemas)}
    return save_checkpoint(
        ckpt_root, step, model_state=model.state_dict(), ema_state=ema.state_dict(), trainer_state=trainer_state,
        meta={"samples": samples, "loss": losses[-1] if losses else None, "valid_loss": vloss,
              "train_seconds": round(train_seconds, 2)}, extra_weights=extra)


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


def _run_codec(run_dir: Path, fdir: Path, log):
    """The fitted codec of this run: ``RUN_DIR/codec`` when the run has one (it keeps the statistics it started
    with, whatever happens to the shared cache later), else the cache's (saved into the run when it starts)."""
    from sonodiff.audio.codecs import load_codec

    cache_codec = load_codec(fdir / "codec")
    if not (run_dir / "codec" / "config.json").is_file():
        return cache_codec
    own = load_codec(run_dir / "codec")
    if own.config_dict() != cache_codec.config_dict():
        raise ValueError(f"{run_dir}/codec is a {own.config_dict()} codec but the feature cache {fdir} holds "
                         f"{cache_codec.config_dict()}: the run's codec settings changed; use a new run directory")
    if any(not torch.equal(a, b) for a, b in zip(own.stats().values(), cache_codec.stats().values())):
        log(f"the feature cache {fdir} was refitted since this run started (data or split changed); the run keeps "
            f"normalising with its own statistics ({run_dir}/codec)")
    return own


def _valid_set(cfg: Config, fdir: Path, frames: int, codec) -> CachedDataset | None:
    if not cfg.data.valid_split or not cfg.train.valid_every:
        return None
    try:
        return CachedDataset(fdir, cfg.data.valid_split, frames, "start", pad=cfg.data.pad, in_memory=True,
                             codec=codec)
    except ValueError:
        return None  # no items in that split


@torch.no_grad()
def _validate(model, ds: CachedDataset, cfg: Config, device) -> float:
    """Mean loss over fixed validation examples with fixed noise (comparable across steps)."""
    model.eval()
    total, n = 0.0, 0
    per = max(1, cfg.train.batch_size)
    for b in range(cfg.train.valid_batches):
        pos = range(b * per, min((b + 1) * per, len(ds)))
        if len(pos) == 0:
            break
        exs, sig, noi = [], [], []
        for p in pos:
            g = example_generator(cfg.train.seed, p, stream="valid")
            ex = ds.example(p, g)
            exs.append(ex)
            sig.append(sample_sigmas(cfg.model.density, 1, generator=g, **cfg.model.density_options))
            noi.append(torch.randn(ex.x0.shape, generator=g))
        values = _values(ds, exs, cfg, model)
        loss = model(torch.stack([e.x0 for e in exs]).to(device), torch.cat(sig).to(device), torch.stack(noi).to(device),
                     torch.stack([e.mask for e in exs]).to(device), values, None)
        total += loss.sum().item()
        n += len(pos)
    model.train()
    return total / max(n, 1)


def _bucket_name(i: int) -> str:
    edges = ("0",) + tuple(str(e) for e in SIGMA_BUCKETS) + ("inf",)
    return f"{edges[i]}-{edges[i + 1]}"


def _progress(cfg: Config, step: int, is_main: bool):
    if not (cfg.train.progress and is_main):
        return None
    from tqdm import tqdm

    return tqdm(total=cfg.train.steps, initial=step, desc="train", unit="step", dynamic_ncols=True)


def _dry_run(cfg: Config, ds, model, device, run_dir, log) -> TrainResult:
    """Check config and data, time a few steps, print model size and a step-time estimate; no training."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.optim.lr)
    per = cfg.train.batch_size // cfg.optim.accumulate
    order = PositionOrder(len(ds), cfg.train.seed)
    times = []
    for i in range(3):
        t0 = time.perf_counter()
        x0, sigma, noise, mask, values, drop = _make_batch(ds, order, range(i * per, (i + 1) * per), cfg, model, device)
        with _rng_scope(_step_seed(cfg, i, 0), device):
            model(x0, sigma, noise, mask, values, drop).mean().backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t0)
    t = min(times[1:]) * cfg.optim.accumulate
    log(f"dry run: {t:.3f} s per optimizer step -> about {t * cfg.train.steps / 60:.1f} min for {cfg.train.steps} steps "
        f"on {device}")
    return TrainResult(str(run_dir), 0, (), 0, "")
