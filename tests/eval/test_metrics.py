"""Distribution and paired metrics of `sonodiff evaluate` against closed forms and the reference packages."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sonodiff.eval.metrics import bootstrap, frechet_distance, kad, mel_distance, pesq_score, proportion_ci, si_sdr, \
    stoi_score


def _rbf_mean(mu1, S1, mu2, S2, s):
    """E exp(-|x - y|^2 / (2 s^2)) for independent x ~ N(mu1, S1), y ~ N(mu2, S2) (closed form)."""
    d = len(mu1)
    A = np.eye(d) + (S1 + S2) / s**2
    diff = mu1 - mu2
    return np.linalg.det(A) ** -0.5 * math.exp(-0.5 * diff @ np.linalg.solve(s**2 * np.eye(d) + S1 + S2, diff))


def test_kad_matches_the_closed_form_mmd_of_two_gaussians():
    d, n, s = 3, 3000, 1.5
    mu1, mu2 = np.zeros(d), np.array([0.6, -0.3, 0.0])
    S1, S2 = np.diag([1.0, 0.5, 0.8]), np.diag([0.7, 0.5, 1.2])
    want = 1000 * (_rbf_mean(mu1, S1, mu1, S1, s) + _rbf_mean(mu2, S2, mu2, S2, s) - 2 * _rbf_mean(mu1, S1, mu2, S2, s))
    vals = []
    for seed in range(5):  # one estimate at n = 3000 has a spread of about 7%; five of them about 3%
        g = torch.Generator().manual_seed(seed)
        a = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.tensor(np.sqrt(np.diag(S1))) + torch.tensor(mu1)
        b = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.tensor(np.sqrt(np.diag(S2))) + torch.tensor(mu2)
        vals.append(kad(a, b, bandwidth=s))
    got = float(np.mean(vals))
    assert got == pytest.approx(want, rel=0.08), (got, want)
    assert kad(a, b, bandwidth=s, scale=1.0) == pytest.approx(vals[-1] / 1000, rel=1e-9)


def test_kad_is_unbiased_for_two_samples_of_one_distribution():
    """The estimator's mean over many pairs of small samples of one distribution is 0 (the Frechet distance's is not)."""
    g = torch.Generator().manual_seed(1)
    kads, fds = [], []
    for _ in range(300):
        a, b = torch.randn(12, 4, generator=g), torch.randn(12, 4, generator=g)
        kads.append(kad(a, b, bandwidth=2.0))
        fds.append(frechet_distance(a, b))
    k = np.asarray(kads)
    assert abs(k.mean()) < 3 * k.std() / math.sqrt(len(k))  # zero within three standard errors
    assert np.mean(fds) > 10 * k.std() / math.sqrt(len(k)) / 1000  # the Frechet distance is biased upward
    assert min(kads) < 0  # an unbiased estimate of 0 takes both signs
    # different distributions: clearly positive
    assert kad(torch.randn(200, 4, generator=g), torch.randn(200, 4, generator=g) + 1.0) > 50


def test_kad_and_frechet_are_invariant_to_order_and_reject_bad_sizes():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(40, 5, generator=g), torch.randn(30, 5, generator=g) + 0.5
    p = torch.randperm(40, generator=g)
    assert kad(a[p], b) == pytest.approx(kad(a, b), rel=1e-9)
    assert frechet_distance(a[p], b) == pytest.approx(frechet_distance(a, b), rel=1e-9)
    with pytest.raises(ValueError, match="at least 2"):
        kad(a[:1], b)
    with pytest.raises(ValueError, match="different sizes"):
        kad(a, b[:, :3])


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(80, 3, generator=g), torch.randn(80, 3, generator=g) + 0.7
    lo, hi = bootstrap(frechet_distance, a, b, n=100, seed=5)
    assert (lo, hi) == bootstrap(frechet_distance, a, b, n=100, seed=5)
    assert (lo, hi) != bootstrap(frechet_distance, a, b, n=100, seed=6)
    assert lo < frechet_distance(a, b) < hi
    lo2, hi2 = bootstrap(lambda x, y: kad(x, y, bandwidth=1.0), a, b, n=100)
    assert lo2 < kad(a, b, bandwidth=1.0) < hi2


def test_wilson_interval_stays_in_unit_range():
    assert proportion_ci(10, 10)[1] == pytest.approx(1.0) and proportion_ci(10, 10)[0] > 0.6
    assert proportion_ci(0, 10)[0] == 0.0
    lo, hi = proportion_ci(50, 100)
    assert lo == pytest.approx(0.404, abs=2e-3) and hi == pytest.approx(0.596, abs=2e-3)


def test_si_sdr_closed_form_and_scale_invariance():
    g = torch.Generator().manual_seed(4)
    s = torch.randn(16000, generator=g, dtype=torch.float64)
    s = s - s.mean()
    noise = torch.randn(16000, generator=g, dtype=torch.float64)
    noise = noise - noise.mean()
    noise = noise - (noise @ s) / (s @ s) * s  # orthogonal to s
    noise = noise * (s.norm() / noise.norm()) * 10 ** (-20 / 20)  # 20 dB below
    assert si_sdr(s.numpy(), (s + noise).numpy()) == pytest.approx(20.0, abs=1e-6)
    assert si_sdr(s.numpy(), (0.1 * (s + noise)).numpy()) == pytest.approx(20.0, abs=1e-6)


def test_pesq_and_stoi_agree_with_the_reference_packages():
    from pesq import pesq
    from pystoi import stoi

    g = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    ref = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float64)
    ref += 0.01 * g.standard_normal(len(ref))
    deg = ref + 0.02 * g.standard_normal(len(ref))
    v, mode = pesq_score(ref, deg, 16000)
    assert mode == "wb" and v == pytest.approx(pesq(16000, ref, deg, "wb"), abs=1e-9)
    v8, mode8 = pesq_score(ref[::2], deg[::2], 8000)
    assert mode8 == "nb" and v8 == pytest.approx(pesq(8000, ref[::2], deg[::2], "nb"), abs=1e-9)
    assert stoi_score(ref, deg, 16000) == pytest.approx(stoi(ref, deg, 16000), abs=1e-9)
    assert mel_distance(ref, ref, 16000) == 0.0 < mel_distance(ref, deg, 16000)
