"""The vocoder task: a GAN vocoder that voices a mel codec's features (``task = "vocoder"``).

Data: every item of ``data.split`` under ``data.root`` (any dataset layout), read once at the codec's sample
rate, mono, kept in memory; an example is a random crop of ``data.seconds`` (a whole number of hops; shorter
items are zero-padded) drawn from ``example_generator(seed, position)``. The generator's input is the crop's
natural-log mel under the recipe's codec settings (``sonodiff.audio.features.log_mel``, float32), so a trained
vocoder voices exactly what that codec's ``decode`` returns.

Phases (HiFi-GAN, Kong et al. 2020; Vocos, Siuzdak 2023): for the first ``vocoder.warmup_steps`` steps the
generator alone, with the mel L1 and multi-resolution STFT losses; then at each step the discriminators
(multi-period + multi-resolution) step on real crops against the generator's output (detached), and the
generator steps on the reconstruction losses plus the adversarial and feature-matching losses. The generator's
output is computed once per step (``state``) and shared by both phases. The EMA averages the generator; it is
what validation (mel L1 on fixed validation crops), demos and export use.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from sonodiff.training.data import PositionOrder, example_generator
from sonodiff.training.task import Task

__all__ = ["VocoderTask", "vocoder_mel_config"]


def vocoder_mel_config(cfg):
    """The MelConfig the vocoder voices: the recipe's codec settings (a mel codec with magnitude, centred
    frames and a hann window, which is what :class:`~sonodiff.audio.neural_vocoder.NeuralVocoder` inverts)."""
    from sonodiff.audio.codecs import make_codec
    from sonodiff.audio.features import MelConfig

    if cfg.codec.name != "mel":
        raise ValueError(f"task 'vocoder' voices mel features: codec.name must be 'mel', got {cfg.codec.name!r}")
    c = make_codec("mel", **cfg.codec.options).config
    bad = {k: v for k, v in (("power", c.power), ("center", c.center), ("window", c.window))
           if v != {"power": 1.0, "center": True, "window": "hann"}[k]}
    if bad:
        raise ValueError(f"task 'vocoder' needs a mel codec with power 1.0, center true and a hann window; the "
                         f"recipe's codec.options give {bad}")
    return MelConfig(sample_rate=c.sample_rate, n_fft=c.n_fft, hop_length=c.hop_length, win_length=c.win_length,
                     window=c.window, n_mels=c.n_mels, f_min=c.f_min, f_max=c.f_max, mel_scale=c.mel_scale,
                     power=c.power, log_floor=c.log_floor, center=c.center)


class VocoderTask(Task):
    name = "vocoder"
    resume_fixed = ("data", "codec", "vocoder")
    resume_free = {"data": ("root", "cache_dir", "prepare_workers"), "vocoder": ("demo_clips",)}

    def setup(self) -> None:
        from sonodiff.audio.discriminators import DiscriminatorConfig, Discriminators
        from sonodiff.audio.gan_losses import MelReconstructionLoss, MultiResolutionSTFTLoss
        from sonodiff.audio.neural_vocoder import NeuralVocoder, NeuralVocoderConfig

        cfg, v = self.cfg, self.cfg.vocoder
        self.mel = vocoder_mel_config(cfg)
        sr, hop = self.mel.sample_rate, self.mel.hop_length
        self.segment = int(round(cfg.data.seconds * sr)) // hop * hop
        if self.segment < 2 * self.mel.n_fft:
            raise ValueError(f"data.seconds={cfg.data.seconds} gives crops of {self.segment} samples; a vocoder "
                             f"crop needs at least 2 x n_fft = {2 * self.mel.n_fft} samples at {sr} Hz")
        self.clips = self._load(cfg.data.split)
        if not self.clips:
            raise ValueError(f"no readable audio in split {cfg.data.split!r} of {cfg.data.root} "
                             f"(layout {cfg.data.layout!r})")
        self.valid = self._load(cfg.data.valid_split)[: cfg.train.valid_batches * cfg.train.batch_size] \
            if cfg.data.valid_split and (cfg.train.valid_every or v.demo_clips) else []
        self.order = PositionOrder(len(self.clips), cfg.train.seed)
        from sonodiff.utils.config import from_dict

        mel_fields = {"sample_rate", "n_fft", "hop_length", "win_length", "n_mels", "f_min", "f_max", "mel_scale",
                      "log_floor"}
        fixed = sorted(mel_fields & set(v.generator))
        if fixed:
            raise ValueError(f"vocoder.generator sets {fixed}: the vocoder's mel settings come from codec.options")
        base = NeuralVocoderConfig.from_mel_config(self.mel).to_dict()
        gcfg = from_dict(NeuralVocoderConfig, {**base, **v.generator}, "vocoder.generator")
        if "sample_rate" in v.discriminator:
            raise ValueError("vocoder.discriminator sets sample_rate: it is the codec's (codec.options.sample_rate)")
        dcfg = from_dict(DiscriminatorConfig, {"sample_rate": sr, **v.discriminator}, "vocoder.discriminator")
        self.model = nn.ModuleDict({"generator": NeuralVocoder(gcfg), "discriminator": Discriminators(dcfg)})
        self.model.to(self.device)
        self.mel_loss = MelReconstructionLoss(self.mel).to(self.device)
        self.stft_loss = MultiResolutionSTFTLoss(sample_rate=sr).to(self.device)
        self.spec = {"kind": "vocoder", "vocoder": "neural", "config": gcfg.to_dict(),
                     "discriminator": dcfg.to_dict()}

    def _load(self, split: str) -> list[torch.Tensor]:
        from sonodiff.audio.io import load_audio
        from sonodiff.data.layouts import scan

        root = Path(self.cfg.data.root)
        items = sorted((it for it in scan(root, self.cfg.data.layout).items if it.split == split), key=lambda it: it.key)
        if self.cfg.data.max_items:
            items = items[: self.cfg.data.max_items]
        out, bad = [], 0
        for it in items:
            try:
                a = load_audio(root / it.path, sample_rate=self.mel.sample_rate, channels="mono")[0][0]
            except Exception as e:  # noqa: BLE001 - an unreadable file is reported and skipped, as the cache does
                bad += 1
                self.log(f"skipping {root / it.path}: {e}")
                continue
            out.append(a)
        if bad:
            self.log(f"{bad} unreadable files skipped in split {split!r}")
        return out

    def describe(self) -> str:
        g, d = self.model["generator"], self.model["discriminator"]
        secs = sum(len(c) for c in self.clips) / self.mel.sample_rate
        return (f"{len(self.clips)} training clips ({secs / 60:.1f} min of audio at {self.mel.sample_rate} Hz), crops of "
                f"{self.segment} samples; generator {g.num_parameters() / 1e6:.2f} M parameters, discriminators "
                f"{d.num_parameters() / 1e6:.2f} M")

    # --- the engine's hooks ---------------------------------------------------------------------
    def forward_modules(self):
        return {"generator": self.model["generator"], "discriminator": self.model["discriminator"]}

    def ema_module(self):
        return self.model["generator"]

    def optimizers(self):
        return {"discriminator": list(self.model["discriminator"].parameters()),
                "generator": list(self.model["generator"].parameters())}

    def optimizer_options(self, name: str) -> dict:
        opts = super().optimizer_options(name)
        if name == "discriminator":
            opts["lr"] *= self.cfg.vocoder.d_lr_ratio
        return opts

    def phases(self, step: int):
        return ("generator",) if step < self.cfg.vocoder.warmup_steps else ("discriminator", "generator")

    def _crop(self, clip: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        n = self.segment
        if len(clip) <= n:
            return torch.nn.functional.pad(clip, (0, n - len(clip)))
        start = int(torch.randint(0, len(clip) - n + 1, (1,), generator=g)) if g is not None else 0
        return clip[start:start + n]

    def batch(self, positions: range):
        crops = []
        for p in positions:
            g = example_generator(self.cfg.train.seed, p)
            crops.append(self._crop(self.clips[self.order(p)], g))
        return torch.stack(crops).to(self.device)

    def batch_size_of(self, batch) -> int:
        return batch.shape[0]

    def _log_mel(self, audio: torch.Tensor) -> torch.Tensor:
        from sonodiff.audio.features import log_mel

        with torch.autocast(audio.device.type, enabled=False):
            return log_mel(audio.float(), self.mel, self.mel_loss.fb)

    def loss(self, phase, audio, state):
        from sonodiff.audio.gan_losses import discriminator_loss, feature_matching_loss, generator_adversarial_loss

        v, B = self.cfg.vocoder, audio.shape[0]
        one = torch.ones((), device=audio.device)
        if "fake" not in state:  # once per step, shared by both phases
            state["fake"] = self.nets["generator"](self._log_mel(audio), length=audio.shape[-1]).float()
        fake = state["fake"]
        if phase == "discriminator":
            logits, _ = self.nets["discriminator"](torch.cat([audio, fake.detach()]))
            d_loss, m = discriminator_loss([x[:B] for x in logits], [x[B:] for x in logits], v.adversarial)
            return d_loss.reshape(1), {f"vocoder/{k}": (val, one) for k, val in m.items()}
        mel = self.mel_loss(fake, audio)
        stft = self.stft_loss(fake, audio)
        total = v.mel_weight * mel + v.stft_weight * stft
        metrics = {"vocoder/mel_l1": (mel.detach(), one), "vocoder/mr_stft": (stft.detach(), one)}
        if "discriminator" in state["phases"]:
            logits, feats = self.nets["discriminator"](torch.cat([audio, fake]))
            adv = generator_adversarial_loss([x[B:] for x in logits], v.adversarial)
            fm = feature_matching_loss([[f[:B].detach() for f in fs] for fs in feats], [[f[B:] for f in fs] for fs in feats])
            total = total + v.adv_weight * adv + v.fm_weight * fm
            metrics.update({"vocoder/g_adv": (adv.detach(), one), "vocoder/feature_matching": (fm.detach(), one)})
        return total.reshape(1), metrics

    # --- validation, demos ----------------------------------------------------------------------
    @torch.no_grad()
    def validate(self, ema_module) -> float | None:
        """Mel L1 of the EMA generator on the validation clips (from their start; comparable across steps)."""
        if not self.valid:
            return None
        ema_module.eval()
        total, n = 0.0, 0
        bs = max(1, self.cfg.train.batch_size)
        for i in range(0, len(self.valid), bs):
            audio = torch.stack([self._crop(c, None) for c in self.valid[i:i + bs]]).to(self.device)
            fake = ema_module(self._log_mel(audio), length=audio.shape[-1]).float()
            total += self.mel_loss(fake, audio).item() * len(audio)
            n += len(audio)
        return total / n

    @torch.no_grad()
    def demo(self, ema_module, step: int, logger) -> None:
        """The first ``vocoder.demo_clips`` validation clips (whole) resynthesised: WAVs in RUN_DIR/demos/step_N/
        and TensorBoard audio."""
        from sonodiff.audio.io import save_audio

        clips = self.valid[: self.cfg.vocoder.demo_clips]
        if not clips:
            return
        ema_module.eval()
        out = self.run_dir / "demos" / f"step_{step:08d}"
        out.mkdir(parents=True, exist_ok=True)
        for k, clip in enumerate(clips):
            clip = clip if len(clip) > self.mel.n_fft else torch.nn.functional.pad(clip, (0, self.mel.n_fft + 1 - len(clip)))
            audio = clip[None].to(self.device)
            fake = ema_module(self._log_mel(audio), length=audio.shape[-1]).float().cpu()
            save_audio(out / f"clip{k}_vocoder.wav", fake[0][None].clamp(-1, 1), self.mel.sample_rate)
            save_audio(out / f"clip{k}_real.wav", clip[None].clamp(-1, 1), self.mel.sample_rate)
            logger.audio(f"demo/clip{k}", step, fake[0], self.mel.sample_rate)
