"""The diffusion task: a denoiser (network + parameterization + conditioner) trained on cached codec features.

Batches draw, per global sample position, the example (a crop of a cached item), its noise level from the
recipe's training density, its noise and its classifier-free-guidance dropout flag, each from
``example_generator(seed, position)``; the loss is ``DiffusionModel.forward`` (the parameterization's weighted
loss, per example). Metrics: the loss in buckets of noise level. Validation: the EMA model's loss on fixed
validation examples with fixed noise. Demos: generations with the recipe's demo settings.
"""

from __future__ import annotations

from pathlib import Path

import torch

from sonodiff.core.schedules import sample_sigmas
from sonodiff.data.datasets import CachedDataset
from sonodiff.models.diffusion import example_frames
from sonodiff.training.build import build_model, check_trainer_inputs, example_values, label_field, needs_labels
from sonodiff.training.data import PositionOrder, example_generator
from sonodiff.training.task import Task

__all__ = ["DiffusionTask", "SIGMA_BUCKETS"]

SIGMA_BUCKETS = (0.05, 0.3, 1.0, 5.0)  # edges of the per-noise-level loss buckets


class DiffusionTask(Task):
    name = "diffusion"
    resume_fixed = ("data", "codec", "model", "conditioning")

    def prepare(self) -> None:
        """Bring the feature cache up to date (rank 0; the engine makes the others wait)."""
        from sonodiff.audio.codecs import make_codec
        from sonodiff.data.cache import feature_dir, prepare

        cfg = self.cfg
        codec = make_codec(cfg.codec.name, **cfg.codec.options)
        cache_dir = Path(cfg.data.cache_dir) if cfg.data.cache_dir else Path(cfg.data.root) / ".sonodiff_cache"
        if self.rank == 0:
            if cfg.data.bundled:
                from sonodiff.data.bundled import build_bundled

                build_bundled(cfg.data.bundled, cfg.data.root, log=self.log)  # no-op once built
            report = prepare(cfg.data.root, codec, cache_dir=cache_dir, layout=cfg.data.layout,
                             workers=cfg.data.prepare_workers, log=self.log, fit_split=cfg.data.split)
            self.log(f"feature cache: {report.summary()}")
            if report.bad:
                self.log(f"{len(report.bad)} bad entries skipped (listed in {report.cache_dir}/report.json)")
        self.feature_dir = feature_dir(cache_dir, codec)

    def setup(self) -> None:
        cfg = self.cfg
        fdir = self.feature_dir
        self.codec = run_codec(self.run_dir, fdir, self.log)
        self.frames = example_frames(self.codec, cfg.data.seconds)
        self.ds = CachedDataset(fdir, cfg.data.split, self.frames, cfg.data.crop, pad=cfg.data.pad,
                                max_items=cfg.data.max_items, in_memory=True, codec=self.codec)
        self.order = PositionOrder(len(self.ds), cfg.train.seed)
        self.valid = _valid_set(cfg, fdir, self.frames, self.codec)
        labels = self.ds.labels(label_field(cfg.conditioning)) if needs_labels(cfg.conditioning) else None
        self.model, self.spec = build_model(cfg, self.ds.shape, labels)
        check_trainer_inputs(self.model.conditioner)
        self.model.to(self.device)
        # each caption through the frozen text encoder once, not once per step (train.text_memo = false: every step)
        if cfg.train.text_memo and self.model.enable_text_memo():
            self.log("text encodings are computed once per distinct text (frozen encoder) and reused")
        self.run_extra = {"feature_dir": str(fdir)}
        if self.codec.mel_config is not None and cfg.demo.vocoder != "griffin_lim":
            from sonodiff.models.vocoders import load_vocoder

            load_vocoder(cfg.demo.vocoder, expect=self.codec.mel_config)  # a wrong demo.vocoder fails now, not at the end

    def describe(self) -> str:
        return f"{len(self.ds)} training examples of shape {list(self.ds.shape)}; {super().describe()}"

    def protected_checkpoints(self) -> tuple[str, ...]:
        return (self.cfg.demo.guide,) if self.cfg.demo.guide else ()

    def save_run_files(self) -> None:
        if not (self.run_dir / "codec" / "config.json").is_file():
            self.codec.save(self.run_dir / "codec")  # the statistics this run normalises with (resume, demos, export)

    # --- a step -------------------------------------------------------------------------------
    def batch(self, positions: range):
        """(x0, sigma, noise, mask, conditioning values, CFG-dropout flags) for global sample ``positions``."""
        exs, sigmas, noises, drops = [], [], [], []
        cfg, m, device = self.cfg, self.cfg.model, self.device
        for p in positions:
            g = example_generator(cfg.train.seed, p)
            ex = self.ds.example(self.order(p), g)
            exs.append(ex)
            sigmas.append(sample_sigmas(m.density, 1, generator=g, **m.density_options))
            noises.append(torch.randn(ex.x0.shape, generator=g))
            drops.append(bool(torch.rand(1, generator=g) < cfg.conditioning.dropout))
        values = _values(self.ds, exs, cfg, self.model)
        return (torch.stack([e.x0 for e in exs]).to(device), torch.cat(sigmas).to(device),
                torch.stack(noises).to(device), torch.stack([e.mask for e in exs]).to(device), values,
                torch.tensor(drops, device=device))

    def loss(self, phase, batch, state):
        x0, sigma, noise, mask, values, drop = batch
        per_ex = self.nets["model"](x0, sigma, noise, mask, values, drop)
        d = per_ex.detach().float()
        b = torch.bucketize(sigma.float(), torch.tensor(SIGMA_BUCKETS, device=sigma.device))
        sums = torch.zeros(len(SIGMA_BUCKETS) + 1, device=d.device).index_add_(0, b, d)
        counts = torch.zeros(len(SIGMA_BUCKETS) + 1, device=d.device).index_add_(0, b, torch.ones_like(d))
        return per_ex, {f"loss_sigma_bucket/{_bucket_name(i)}": (sums[i], counts[i]) for i in range(len(sums))}

    # --- hooks ----------------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self, ema_module) -> float | None:
        """Mean loss over fixed validation examples with fixed noise (comparable across steps)."""
        if self.valid is None:
            return None
        cfg, ds, device = self.cfg, self.valid, self.device
        ema_module.eval()
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
            values = _values(ds, exs, cfg, ema_module)
            loss = ema_module(torch.stack([e.x0 for e in exs]).to(device), torch.cat(sig).to(device),
                              torch.stack(noi).to(device), torch.stack([e.mask for e in exs]).to(device), values, None)
            total += loss.sum().item()
            n += len(pos)
        return total / max(n, 1)

    def demo(self, ema_module, step: int, logger) -> None:
        from sonodiff.training.demo import write_demos

        write_demos(ema_module, self.cfg, self.codec, self.frames, step, self.run_dir, logger, self.device)


# ----------------------------------------------------------------------------------------------- helpers
def _values(ds: CachedDataset, examples: list, cfg, model) -> list | None:
    """The conditioning value of each example (its field, or for timing its crop's start and length in seconds)."""
    if model.conditioner is None:
        return None
    fs = ds.frame_seconds if ds.codec.sample_rate else None  # frames of an image codec have no duration
    starts = [ex.start * fs if fs is not None else None for ex in examples]
    return example_values(model.conditioner, [ex.meta for ex in examples], starts, cfg.conditioning.field,
                          cfg.conditioning.fields)


def _bucket_name(i: int) -> str:
    edges = ("0",) + tuple(str(e) for e in SIGMA_BUCKETS) + ("inf",)
    return f"{edges[i]}-{edges[i + 1]}"


def run_codec(run_dir: Path, fdir: Path, log):
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


def _valid_set(cfg, fdir: Path, frames: int, codec) -> CachedDataset | None:
    if not cfg.data.valid_split or not cfg.train.valid_every:
        return None
    try:
        return CachedDataset(fdir, cfg.data.valid_split, frames, "start", pad=cfg.data.pad, in_memory=True,
                             codec=codec)
    except ValueError:
        return None  # no items in that split

