"""Metrics of `sonodiff evaluate`: distribution distances in an embedding, paired reconstruction, speech, pitch.

Distributions (embeddings ``[N, E]``):

- :func:`frechet_distance` (Heusel et al. 2017; FAD, Kilgour et al. 2019): the Frechet distance of Gaussians fitted
  to the two sets;
- :func:`kad` (kernel audio distance, Chung et al. 2025): the unbiased estimator of the squared maximum mean
  discrepancy (Gretton et al. 2012) with a Gaussian RBF kernel (characteristic), bandwidth the median pairwise
  distance of the pooled sets unless given, reported x1000 as kadtk does. Its expectation for two samples of one
  distribution is exactly 0, so small sets are not biased upward as the Frechet distance is;
- :func:`bootstrap` gives seeded percentile confidence intervals of either (both sets resampled with replacement).

Paired (a degraded clip against its reference, same rate): :func:`pesq_score` (ITU-T P.862 through the ``pesq``
package: narrow-band at 8 kHz, wide-band at 16 kHz; other rates are resampled to 16 kHz), :func:`stoi_score`
(pystoi), :func:`mel_distance` (multi-resolution log-mel L1), :func:`si_sdr` (Le Roux et al. 2019).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from sonodiff.eval.classifier import frechet_distance

__all__ = ["frechet_distance", "kad", "median_bandwidth", "bootstrap", "proportion_ci", "si_sdr", "mel_distance", "pesq_score",
           "stoi_score", "KAD_SCALE", "mmd2_unbiased"]

KAD_SCALE = 1000.0


def median_bandwidth(a: Tensor, b: Tensor) -> float:
    """The median Euclidean distance between distinct points of the pooled sets (the usual RBF bandwidth)."""
    x = torch.cat([a, b]).double()
    d = torch.cdist(x, x)
    iu = torch.triu_indices(len(x), len(x), offset=1)
    m = float(d[iu[0], iu[1]].median())
    return m if m > 0 else 1.0


def mmd2_unbiased(kxx: Tensor, kyy: Tensor, kxy: Tensor) -> float:
    """The unbiased MMD^2 estimate from kernel matrices ``k(x, x) [M, M]``, ``k(y, y) [N, N]`` and ``k(x, y) [M, N]``
    (Gretton et al. 2012): the within-set means leave the diagonal out. KAD (RBF kernel) and KID (polynomial) use it."""
    m, n = len(kxx), len(kyy)
    xx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    yy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return float(xx + yy - 2 * kxy.mean())


def kad(a: Tensor, b: Tensor, bandwidth: float | None = None, scale: float = KAD_SCALE) -> float:
    """Unbiased MMD^2 between embeddings ``a [M, E]`` and ``b [N, E]`` with ``k(x, y) = exp(-|x-y|^2 / (2 s^2))``,
    times ``scale``. ``bandwidth`` s: None = :func:`median_bandwidth` of the pooled sets. Can be slightly
    negative (an unbiased estimate of a quantity that is 0 for equal distributions)."""
    a, b = a.double(), b.double()
    m, n = len(a), len(b)
    if m < 2 or n < 2:
        raise ValueError(f"KAD needs at least 2 embeddings on each side, got {m} and {n}")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"KAD of embeddings of different sizes: {a.shape[1]} and {b.shape[1]}")
    s = median_bandwidth(a, b) if bandwidth is None else float(bandwidth)
    if not s > 0:
        raise ValueError(f"KAD bandwidth must be > 0, got {s}")
    g = -0.5 / (s * s)
    k = lambda u, v: torch.exp(g * torch.cdist(u, v).pow(2))  # noqa: E731
    return scale * mmd2_unbiased(k(a, a), k(b, b), k(a, b))


def bootstrap(fn: Callable[[Tensor, Tensor], float], a: Tensor, b: Tensor, n: int = 200, seed: int = 0,
              level: float = 0.95) -> tuple[float, float]:
    """Confidence interval of ``fn(a, b)`` over ``n`` resamplings (with replacement) of both sets, from a generator
    seeded by ``seed`` (the same inputs give the same interval).

    Resampling with replacement repeats points, which raises both the Frechet distance (a smaller effective sample)
    and the within-set terms of KAD, so the plain percentile interval sits above the estimate. The interval
    returned is the percentile interval shifted by the bootstrap's estimate of that bias (mean of the resampled
    values minus the estimate): it keeps the spread of the resampled values around the estimate."""
    if n < 2:
        raise ValueError(f"bootstrap needs n >= 2 resamplings, got {n}")
    g = torch.Generator().manual_seed(seed)
    vals = []
    for _ in range(n):
        ia = torch.randint(0, len(a), (len(a),), generator=g)
        ib = torch.randint(0, len(b), (len(b),), generator=g)
        vals.append(fn(a[ia], b[ib]))
    v = np.asarray(vals)
    bias = float(v.mean()) - fn(a, b)
    lo, hi = np.quantile(v, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo - bias), float(hi - bias)


def proportion_ci(hits: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a proportion ``hits / n`` (stays within [0, 1])."""
    if n < 1:
        raise ValueError("a proportion of zero trials")
    p = hits / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


# --- paired ------------------------------------------------------------------------------------------------

def _pair(ref, deg) -> tuple[Tensor, Tensor]:
    r = torch.as_tensor(np.asarray(ref, dtype=np.float64)).reshape(-1)
    d = torch.as_tensor(np.asarray(deg, dtype=np.float64)).reshape(-1)
    n = min(len(r), len(d))
    if n == 0:
        raise ValueError("paired metric of an empty clip")
    return r[:n], d[:n]


def si_sdr(ref, deg) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (both zero-meaned; the shorter length of the two)."""
    r, d = _pair(ref, deg)
    r, d = r - r.mean(), d - d.mean()
    alpha = (d @ r) / (r @ r).clamp_min(1e-12)
    target = alpha * r
    noise = d - target
    return float(10 * torch.log10((target @ target).clamp_min(1e-12) / (noise @ noise).clamp_min(1e-12)))


def mel_distance(ref, deg, sample_rate: int) -> float:
    """Mean L1 distance of natural-log mels at three resolutions (n_fft = 32, 64, 128 ms; 64 bins; floor 1e-5)."""
    from sonodiff.audio.features import MelConfig, log_mel

    r, d = (x.float() for x in _pair(ref, deg))
    out = []
    for ms in (32, 64, 128):
        n = int(sample_rate * ms / 1000)
        n += n % 2
        if len(r) <= n:
            continue
        mc = MelConfig(sample_rate=sample_rate, n_fft=n, hop_length=n // 4, n_mels=64, f_min=0.0)
        out.append((log_mel(r, mc) - log_mel(d, mc)).abs().mean().item())
    if not out:
        raise ValueError(f"mel distance needs clips longer than 32 ms at {sample_rate} Hz, got {len(r)} samples")
    return float(np.mean(out))


def pesq_score(ref, deg, sample_rate: int) -> tuple[float, str]:
    """(PESQ MOS-LQO, mode): "nb" at 8 kHz, "wb" at 16 kHz; other rates are resampled to 16 kHz first."""
    from pesq import pesq

    r, d = _pair(ref, deg)
    sr = sample_rate
    if sr not in (8000, 16000):
        import torchaudio

        r = torchaudio.functional.resample(r.float(), sr, 16000).double()
        d = torchaudio.functional.resample(d.float(), sr, 16000).double()
        sr = 16000
    mode = "nb" if sr == 8000 else "wb"
    return float(pesq(sr, r.numpy(), d.numpy(), mode)), mode


def stoi_score(ref, deg, sample_rate: int) -> float:
    """Short-time objective intelligibility (pystoi; it resamples to 10 kHz itself)."""
    from pystoi import stoi

    r, d = _pair(ref, deg)
    return float(stoi(r.numpy(), d.numpy(), sample_rate, extended=False))

