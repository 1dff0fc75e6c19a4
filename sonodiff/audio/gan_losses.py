"""Losses for GAN vocoder training: adversarial (hinge, least squares), feature matching, multi-resolution
STFT and mel reconstruction. All are computed in float32 with autocast off, whatever the input dtype.

Adversarial objectives, per sub-discriminator k with logit maps ``D_k``, averaged over k (as Vocos):

    kind    discriminator                                   generator
    hinge   mean(max(0, 1 - D_k(x))) + mean(max(0, 1 + D_k(G)))   mean(max(0, 1 - D_k(G)))   (Vocos)
    lsgan   mean((1 - D_k(x))^2) + mean(D_k(G)^2)                  mean((1 - D_k(G))^2)       (HiFi-GAN)

Hinge: Lim & Ye 2017, "Geometric GAN", with the generator term clamped at zero as in Siuzdak 2023 (Vocos).
Least squares: Mao et al. 2017, "Least squares generative adversarial networks", as used by HiFi-GAN (Kong
et al. 2020). Feature matching: Larsen et al. 2016 / Kumar et al. 2019 (MelGAN), L1 between the hidden
activations of every discriminator layer on real and generated audio, averaged over layers.

Multi-resolution STFT loss (Yamamoto, Song & Kim 2020, "Parallel WaveGAN", eq. 1-4), per resolution m:

    L_sc  = || |Y| - |Y_hat| ||_F / || |Y| ||_F                  (spectral convergence, over the batch)
    L_mag = mean | log |Y| - log |Y_hat| |                          (log STFT magnitude)
    L     = (1 / M) sum_m (L_sc + L_mag)

with ``|Y| = sqrt(max(|STFT|^2, 1e-7))`` as in Parallel WaveGAN.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sonodiff.audio.features import MelConfig, log_mel, mel_filterbank, stft_magnitude

__all__ = [
    "GAN_LOSSES",
    "MelReconstructionLoss",
    "MultiResolutionSTFTLoss",
    "discriminator_loss",
    "feature_matching_loss",
    "generator_adversarial_loss",
    "mel_reconstruction_loss",
    "multi_resolution_stft_loss",
    "stft_loss_resolutions",
    "stft_loss_terms",
]

_Elementwise = Callable[[Tensor], Tensor]

# name -> (discriminator term on real logits, on fake logits, generator term on fake logits), elementwise.
GAN_LOSSES: dict[str, tuple[_Elementwise, _Elementwise, _Elementwise]] = {
    "hinge": (lambda r: F.relu(1 - r), lambda f: F.relu(1 + f), lambda f: F.relu(1 - f)),
    "lsgan": (lambda r: (1 - r).square(), lambda f: f.square(), lambda f: (1 - f).square()),
}

_POWER_FLOOR = 1e-7  # Parallel WaveGAN's clamp on |STFT|^2 before the square root


def _gan_terms(kind: str) -> tuple[_Elementwise, _Elementwise, _Elementwise]:
    if kind not in GAN_LOSSES:
        raise ValueError(f"unknown GAN loss kind {kind!r}; valid: {sorted(GAN_LOSSES)}")
    return GAN_LOSSES[kind]


def _check_logits(name: str, logits) -> None:
    if not isinstance(logits, (list, tuple)) or not logits:
        raise ValueError(f"{name} must be a non-empty list of logit tensors (one per sub-discriminator), "
                         f"got {type(logits).__name__}")
    for i, t in enumerate(logits):
        if not torch.is_tensor(t) or not t.is_floating_point() or t.numel() == 0:
            raise ValueError(f"{name}[{i}] must be a non-empty floating-point tensor, got "
                             f"{type(t).__name__} {tuple(getattr(t, 'shape', ()))}")


def discriminator_loss(real_logits: Sequence[Tensor], fake_logits: Sequence[Tensor],
                       kind: str = "hinge") -> tuple[Tensor, dict[str, Tensor]]:
    """Discriminator objective, averaged over sub-discriminators (see the module docstring).

    ``real_logits[k]`` and ``fake_logits[k]``: the k-th sub-discriminator's logits on real and generated
    audio, same shape (any, e.g. ``[B, 1, T', p]``); pass the generated audio detached. Returns the scalar
    loss and detached scalar metrics: ``d_loss_real``, ``d_loss_fake`` (the two halves of the loss) and
    ``d_real_logit``, ``d_fake_logit`` (mean logits).
    """
    _check_logits("real_logits", real_logits)
    _check_logits("fake_logits", fake_logits)
    if len(real_logits) != len(fake_logits):
        raise ValueError(f"got {len(real_logits)} real and {len(fake_logits)} fake logit tensors; need one of "
                         "each per sub-discriminator")
    on_real, on_fake, _ = _gan_terms(kind)
    with torch.autocast(device_type=real_logits[0].device.type, enabled=False):
        lr, lf, mr, mf = [], [], [], []
        for k, (r, f) in enumerate(zip(real_logits, fake_logits)):
            if r.shape != f.shape:
                raise ValueError(f"sub-discriminator {k}: real logits {tuple(r.shape)} and fake logits "
                                 f"{tuple(f.shape)} differ; real and generated audio must have the same shape")
            r, f = r.float(), f.float()
            lr.append(on_real(r).mean())
            lf.append(on_fake(f).mean())
            mr.append(r.detach().mean())
            mf.append(f.detach().mean())
        loss_real, loss_fake = torch.stack(lr).mean(), torch.stack(lf).mean()
        metrics = {"d_loss_real": loss_real.detach(), "d_loss_fake": loss_fake.detach(),
                   "d_real_logit": torch.stack(mr).mean(), "d_fake_logit": torch.stack(mf).mean()}
        return loss_real + loss_fake, metrics


def generator_adversarial_loss(fake_logits: Sequence[Tensor], kind: str = "hinge") -> Tensor:
    """Generator adversarial loss on the sub-discriminators' logits for generated audio, averaged over them:
    ``mean_k mean(max(0, 1 - D_k))`` (hinge) or ``mean_k mean((1 - D_k)^2)`` (lsgan). Scalar, float32."""
    _check_logits("fake_logits", fake_logits)
    _, _, on_gen = _gan_terms(kind)
    with torch.autocast(device_type=fake_logits[0].device.type, enabled=False):
        return torch.stack([on_gen(f.float()).mean() for f in fake_logits]).mean()


def feature_matching_loss(real_features: Sequence[Sequence[Tensor]],
                          fake_features: Sequence[Sequence[Tensor]]) -> Tensor:
    """L1 feature matching: mean over every (sub-discriminator, layer) of ``mean |F_real - F_fake|``.

    ``real_features[k][l]`` / ``fake_features[k][l]``: layer l of sub-discriminator k on real / generated
    audio (same shapes). Real features are detached: this loss trains the generator only. Scalar, float32.
    """
    if not isinstance(real_features, (list, tuple)) or not isinstance(fake_features, (list, tuple)):
        raise ValueError("feature_matching_loss takes two lists (one per sub-discriminator) of lists of tensors")
    if len(real_features) != len(fake_features) or not real_features:
        raise ValueError(f"got {len(real_features)} real and {len(fake_features)} fake feature lists; need the "
                         "same non-zero number (one per sub-discriminator)")
    terms = []
    for k, (rs, fs) in enumerate(zip(real_features, fake_features)):
        if len(rs) != len(fs) or not rs:
            raise ValueError(f"sub-discriminator {k}: {len(rs)} real and {len(fs)} fake layers; need the same "
                             "non-zero number")
        for i, (r, f) in enumerate(zip(rs, fs)):
            if r.shape != f.shape:
                raise ValueError(f"sub-discriminator {k}, layer {i}: real {tuple(r.shape)} vs fake "
                                 f"{tuple(f.shape)}")
            with torch.autocast(device_type=f.device.type, enabled=False):
                terms.append((r.detach().float() - f.float()).abs().mean())
    return torch.stack(terms).mean()


def _check_pair(pred: Tensor, target: Tensor, who: str) -> None:
    for name, t in (("pred", pred), ("target", target)):
        if not torch.is_tensor(t) or not t.is_floating_point() or t.ndim < 1:
            raise ValueError(f"{who}: {name} must be floating-point audio [..., T], got {type(t).__name__} "
                             f"{tuple(getattr(t, 'shape', ()))}")
    if pred.shape != target.shape:
        raise ValueError(f"{who}: pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same "
                         "shape (trim the vocoder output with length=target.shape[-1])")


def stft_loss_resolutions(sample_rate: int) -> tuple[tuple[int, int, int], ...]:
    """Parallel WaveGAN's (n_fft, hop, win) = (1024, 120, 600), (2048, 240, 1200), (512, 50, 240) at 24 kHz,
    scaled to ``sample_rate`` (Hz): n_fft to the nearest power of two (>= 32), hop and win in proportion
    (win capped at n_fft). At 8 kHz: (256, 40, 200), (512, 80, 400), (128, 17, 80)."""
    if not isinstance(sample_rate, int) or isinstance(sample_rate, bool) or sample_rate <= 0:
        raise ValueError(f"sample_rate={sample_rate!r}; must be a positive int (Hz)")
    s = sample_rate / 24000
    out = []
    for n_fft, hop, win in ((1024, 120, 600), (2048, 240, 1200), (512, 50, 240)):
        n = max(32, 2 ** round(math.log2(n_fft * s)))
        out.append((n, max(1, round(hop * s)), min(n, max(1, round(win * s)))))
    return tuple(out)


def _stft_config(n_fft: int, hop: int, win: int) -> MelConfig:
    # An STFT is the front half of a MelConfig; sample_rate and the mel fields are unused here.
    if not (0 < win <= n_fft and hop > 0):
        raise ValueError(f"STFT resolution (n_fft={n_fft}, hop={hop}, win={win}) needs 0 < win <= n_fft, hop > 0")
    return MelConfig(sample_rate=16000, n_fft=n_fft, hop_length=hop, win_length=win, power=2.0, center=True)


def stft_loss_terms(pred: Tensor, target: Tensor, n_fft: int, hop: int, win: int) -> tuple[Tensor, Tensor]:
    """(spectral convergence, log-magnitude L1) at one resolution for audio ``pred``, ``target [..., T]``
    (hann window, centred frames). Float32 scalars."""
    _check_pair(pred, target, "stft_loss_terms")
    cfg = _stft_config(n_fft, hop, win)
    with torch.autocast(device_type=pred.device.type, enabled=False):
        y_hat = stft_magnitude(pred.float(), cfg).clamp_min(_POWER_FLOOR).sqrt()
        y = stft_magnitude(target.float(), cfg).clamp_min(_POWER_FLOOR).sqrt()
        sc = torch.linalg.vector_norm(y - y_hat) / torch.linalg.vector_norm(y)
        mag = (y.log() - y_hat.log()).abs().mean()
    return sc, mag


def multi_resolution_stft_loss(pred: Tensor, target: Tensor,
                               resolutions: Sequence[tuple[int, int, int]]) -> Tensor:
    """Parallel WaveGAN multi-resolution STFT loss ``(1/M) sum_m (L_sc + L_mag)`` for audio ``[..., T]``
    at ``resolutions`` = (n_fft, hop, win) triples. Scalar, float32; 0 for identical audio."""
    if not resolutions:
        raise ValueError("multi_resolution_stft_loss needs at least one (n_fft, hop, win) resolution")
    total = [sum(stft_loss_terms(pred, target, *r)) for r in resolutions]
    return torch.stack(total).mean()


class MultiResolutionSTFTLoss(nn.Module):
    """:func:`multi_resolution_stft_loss` with its resolutions fixed: ``forward(pred, target)`` on audio
    ``[B, T]`` -> scalar. ``resolutions`` None = :func:`stft_loss_resolutions` of ``sample_rate`` (Hz)."""

    def __init__(self, resolutions: Sequence[tuple[int, int, int]] | None = None,
                 sample_rate: int | None = None) -> None:
        super().__init__()
        if (resolutions is None) == (sample_rate is None):
            raise ValueError("MultiResolutionSTFTLoss takes exactly one of resolutions=((n_fft, hop, win), ...) "
                             "or sample_rate= (Hz, for the scaled Parallel WaveGAN resolutions)")
        res = tuple(tuple(int(v) for v in r) for r in resolutions) if resolutions is not None \
            else stft_loss_resolutions(sample_rate)
        for r in res:
            if len(r) != 3:
                raise ValueError(f"resolution {r!r} must be (n_fft, hop, win)")
            _stft_config(*r)
        if not res:
            raise ValueError("MultiResolutionSTFTLoss needs at least one resolution")
        self.resolutions = res

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return multi_resolution_stft_loss(pred, target, self.resolutions)

    def extra_repr(self) -> str:
        return f"resolutions={self.resolutions}"


def mel_reconstruction_loss(pred: Tensor, target: Tensor, mel_config: MelConfig,
                            fb: Tensor | None = None) -> Tensor:
    """``mean | log_mel(pred) - log_mel(target) |`` for audio ``[..., T]`` with
    :func:`sonodiff.audio.features.log_mel` at ``mel_config`` (``fb``: its filterbank, to reuse). Float32."""
    _check_pair(pred, target, "mel_reconstruction_loss")
    with torch.autocast(device_type=pred.device.type, enabled=False):
        if fb is not None:
            fb = fb.to(device=pred.device, dtype=torch.float32)
        return (log_mel(pred.float(), mel_config, fb) - log_mel(target.float(), mel_config, fb)).abs().mean()


class MelReconstructionLoss(nn.Module):
    """:func:`mel_reconstruction_loss` holding the mel filterbank as a (non-persistent) buffer.

    ``forward(pred [B, T], target [B, T])`` -> scalar L1 between natural-log mels (as in HiFi-GAN and Vocos,
    which weight it by 45)."""

    def __init__(self, mel_config: MelConfig) -> None:
        super().__init__()
        if not isinstance(mel_config, MelConfig):
            raise ValueError(f"MelReconstructionLoss needs a MelConfig, got {type(mel_config).__name__}")
        self.mel_config = mel_config
        self.register_buffer("fb", mel_filterbank(mel_config), persistent=False)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return mel_reconstruction_loss(pred, target, self.mel_config, self.fb)
