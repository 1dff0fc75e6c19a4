"""The autoencoder task: a mel VAE (``task = "autoencoder"``), the learned codec of latent diffusion.

Data: the recipe's mel codec features from the feature cache, exactly as a diffusion run on that codec reads them
(:class:`~sonodiff.data.datasets.CachedDataset`: crops of ``data.seconds``, shorter items padded with silence or
masked), normalised by the cache's statistics fitted on the training split. Crops are cut to a multiple of the
autoencoder's down-sampling factor.

Loss per example (masked frames excluded): ``l1 + mse`` of the reconstruction from a posterior sample, plus the same
L1 on 2x and 4x average-pooled versions of both (a multi-resolution term that weights the broad spectral envelope,
what a listener hears first), plus ``autoencoder.kl_weight`` x the KL divergence to N(0, I) per latent element.
Validation: the EMA autoencoder's L1 on fixed validation crops from the posterior mean (what the codec uses).
Demos: validation clips through the codec and Griffin-Lim, beside their Griffin-Lim resynthesis. Export writes an
autoencoder model directory (config.json kind "autoencoder", model.safetensors, codec/ = the mel codec), which the
``latent`` codec loads by path or shipped name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sonodiff.training.data import PositionOrder, example_generator
from sonodiff.training.tasks.diffusion import DiffusionTask, _valid_set, run_codec

__all__ = ["AutoencoderTask"]


class AutoencoderTask(DiffusionTask):
    name = "autoencoder"
    resume_fixed = ("data", "codec", "autoencoder")

    def prepare(self) -> None:
        if self.cfg.codec.name != "mel":  # before any cache is written for a codec this task cannot train on
            raise ValueError(f"task 'autoencoder' trains on mel features: codec.name must be 'mel', got "
                             f"{self.cfg.codec.name!r}")
        super().prepare()

    def setup(self) -> None:
        from sonodiff.audio.codecs import MelCodec
        from sonodiff.data.datasets import CachedDataset
        from sonodiff.models.diffusion import example_frames
        from sonodiff.nn.autoencoder import MelAutoencoder, MelAutoencoderConfig

        cfg = self.cfg
        self.codec = run_codec(self.run_dir, self.feature_dir, self.log)
        if not isinstance(self.codec, MelCodec):
            raise ValueError(f"task 'autoencoder' trains on mel features, but {self.feature_dir} holds a "
                             f"{self.codec.name!r} codec")
        opts = dict(cfg.autoencoder.model)
        for k in ("n_mels", "in_channels"):
            if k in opts:
                raise ValueError(f"autoencoder.model sets {k}: it comes from codec.options")
        acfg = MelAutoencoderConfig.from_dict({**opts, "n_mels": self.codec.config.n_mels,
                                               "in_channels": self.codec.channels}, "autoencoder.model")
        f = acfg.factor
        self.frames = example_frames(self.codec, cfg.data.seconds) // f * f
        if self.frames < f:
            raise ValueError(f"data.seconds={cfg.data.seconds} gives fewer frames than the autoencoder's factor {f}")
        self.ds = CachedDataset(self.feature_dir, cfg.data.split, self.frames, cfg.data.crop, pad=cfg.data.pad,
                                max_items=cfg.data.max_items, in_memory=True, codec=self.codec)
        self.order = PositionOrder(len(self.ds), cfg.train.seed)
        self.valid = _valid_set(cfg, self.feature_dir, self.frames, self.codec)
        self.model = MelAutoencoder(acfg).to(self.device)
        self.spec = {"kind": "autoencoder", "autoencoder": "mel_vae", "config": acfg.to_dict()}
        self.run_extra = {"feature_dir": str(self.feature_dir)}

    def describe(self) -> str:
        c = self.model.config
        return (f"{len(self.ds)} training examples of shape {list(self.ds.shape)} -> latent "
                f"[{c.latent_channels}, {c.n_mels // c.factor}, {self.frames // c.factor}]; "
                f"autoencoder {self.model.num_parameters() / 1e6:.2f} M parameters")

    def protected_checkpoints(self) -> tuple[str, ...]:
        return ()

    # --- a step -------------------------------------------------------------------------------
    def batch(self, positions: range):
        """(x [B, C, n_mels, frames], mask [B, 1, 1, frames], posterior noise) for global sample ``positions``."""
        xs, masks, noises = [], [], []
        c = self.model.config
        shape = (c.latent_channels, c.n_mels // c.factor, self.frames // c.factor)
        for p in positions:
            g = example_generator(self.cfg.train.seed, p)
            ex = self.ds.example(self.order(p), g)
            xs.append(ex.x0)
            masks.append(ex.mask)
            noises.append(torch.randn(shape, generator=g))
        return (torch.stack(xs).to(self.device), torch.stack(masks).to(self.device), torch.stack(noises).to(self.device))

    def loss(self, phase, batch, state):
        x, mask, noise = batch
        recon, mean, logvar = self.nets["model"](x, noise)
        per_ex, parts = self._losses(x, mask, recon.float(), mean.float(), logvar.float())
        one = torch.ones((), device=x.device)
        return per_ex, {f"autoencoder/{k}": (v.detach().sum(), one * len(v)) for k, v in parts.items()}

    def _losses(self, x, mask, recon, mean, logvar):
        m = mask.expand_as(x).float()
        denom = m.flatten(1).sum(1).clamp_min(1.0)
        err = recon - x
        l1 = (err.abs() * m).flatten(1).sum(1) / denom
        mse = (err.pow(2) * m).flatten(1).sum(1) / denom
        multi = torch.zeros_like(l1)
        for k in (2, 4):
            if x.shape[-1] % k or x.shape[-2] % k:
                continue
            mk = F.avg_pool2d(m, k)
            e = (F.avg_pool2d(recon * m, k) - F.avg_pool2d(x * m, k)).abs() * (mk > 0.999)
            multi = multi + e.flatten(1).sum(1) / (mk > 0.999).flatten(1).sum(1).clamp_min(1.0)
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).mean(1)
        total = l1 + mse + multi + self.cfg.autoencoder.kl_weight * kl
        return total, {"l1": l1, "mse": mse, "multires_l1": multi, "kl": kl}

    # --- hooks ----------------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self, ema_module) -> float | None:
        """L1 of the EMA autoencoder's reconstruction from the posterior mean on fixed validation crops."""
        if self.valid is None:
            return None
        ema_module.eval()
        total, n = 0.0, 0
        per = max(1, self.cfg.train.batch_size)
        for b in range(self.cfg.train.valid_batches):
            idx = range(b * per, min((b + 1) * per, len(self.valid)))
            if len(idx) == 0:
                break
            exs = [self.valid.example(i, None) for i in idx]
            x = torch.stack([e.x0 for e in exs]).to(self.device)
            mask = torch.stack([e.mask for e in exs]).to(self.device).expand_as(x).float()
            recon = ema_module(x)[0].float()
            total += ((recon - x).abs() * mask).sum().item() / max(mask.sum().item(), 1.0) * len(idx)
            n += len(idx)
        return total / max(n, 1)

    @torch.no_grad()
    def demo(self, ema_module, step: int, logger) -> None:
        """Up to four validation crops: the reconstruction and the original, each voiced by Griffin-Lim (WAVs in
        RUN_DIR/demos/step_N/, TensorBoard audio)."""
        from sonodiff.audio.io import save_audio
        from sonodiff.models.vocoders import load_vocoder

        if self.valid is None or len(self.valid) == 0:
            return
        ema_module.eval()
        voc = load_vocoder("griffin_lim", expect=self.codec.config)
        out = self.run_dir / "demos" / f"step_{step:08d}"
        out.mkdir(parents=True, exist_ok=True)
        sr = self.codec.sample_rate
        for k in range(min(4, len(self.valid))):
            x = self.valid.example(k, None).x0[None].to(self.device)
            recon = ema_module(x)[0].float()
            for tag, feats in (("autoencoder", recon), ("original", x)):
                audio = voc(self.codec.denormalize(feats.cpu()))[0]
                save_audio(out / f"clip{k}_{tag}.wav", audio.clamp(-1, 1), sr)
                if tag == "autoencoder":
                    logger.audio(f"demo/clip{k}", step, audio, sr)
