import math

import torch

from sonodiff.eval.classifier import ClassifierConfig, evaluate_audio, frechet_distance, train_classifier


def _gaussian_fd(mu1, s1, mu2, s2):
    import numpy as np
    from scipy.linalg import sqrtm

    c = sqrtm(s1.numpy() @ s2.numpy()).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1.numpy() + s2.numpy() - 2 * c))


def test_frechet_distance_matches_closed_form_for_gaussians():
    g = torch.Generator().manual_seed(0)
    d = 4
    A = torch.randn(d, d, generator=g, dtype=torch.float64)
    B = torch.randn(d, d, generator=g, dtype=torch.float64)
    s1, s2 = A @ A.T + 0.5 * torch.eye(d, dtype=torch.float64), B @ B.T + 0.5 * torch.eye(d, dtype=torch.float64)
    mu1, mu2 = torch.zeros(d, dtype=torch.float64), torch.ones(d, dtype=torch.float64)
    n = 200_000
    x = mu1 + torch.randn(n, d, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(s1).T
    y = mu2 + torch.randn(n, d, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(s2).T
    exact = _gaussian_fd(mu1, s1, mu2, s2)
    assert math.isclose(frechet_distance(x, y), exact, rel_tol=0.03)
    assert frechet_distance(x, x) < 1e-6 * exact


def test_classifier_learns_tones_and_evaluates():
    sr = 8000
    labels = ("low", "mid", "high")
    freqs = {"low": 300.0, "mid": 900.0, "high": 2000.0}
    g = torch.Generator().manual_seed(1)
    t = torch.arange(int(0.5 * sr)) / sr
    audio, names = [], []
    for i in range(120):
        name = labels[i % 3]
        f = freqs[name] * (1 + 0.05 * torch.randn((), generator=g))
        audio.append(0.3 * torch.sin(2 * math.pi * f * t) + 0.01 * torch.randn(t.shape, generator=g))
        names.append(name)
    audio = torch.stack(audio)
    cfg = ClassifierConfig(labels=labels, sample_rate=sr, seconds=0.5, n_mels=32, n_fft=256, hop_length=64, width=16,
                           embed_dim=16)
    clf = train_classifier(audio[:90], names[:90], cfg, steps=60, batch_size=32)
    ref = clf.embed(audio[:90]).detach()
    res = evaluate_audio(clf, audio[90:], names[90:], ref)
    assert res["accuracy"] >= 0.9, res
    noise = 0.3 * torch.randn(30, audio.shape[1], generator=g)
    worse = evaluate_audio(clf, noise, None, ref)
    assert worse["frechet"] > 3 * res["frechet"], (worse, res)


def test_rows_markdown_formats_accuracy_with_stderr_and_missing_accuracy():
    from sonodiff.eval.classifier import rows_markdown

    t = rows_markdown([{"row": "a", "n": 10, "accuracy": 0.5, "accuracy_stderr": 0.158, "frechet": 1.234},
                       {"row": "b", "n": 3, "frechet": 0.0}]).splitlines()
    assert t[2] == "| a | 10 | 0.500 ± 0.158 | 1.23 |" and t[3] == "| b | 3 | - | 0.00 |" and len(t) == 4


def test_train_classifier_is_seeded_and_leaves_the_global_rng_alone():
    g = torch.Generator().manual_seed(3)
    audio = 0.1 * torch.randn(12, 2000, generator=g)
    names = ["a", "b"] * 6
    cfg = ClassifierConfig(labels=("a", "b"), sample_rate=8000, seconds=0.25, n_mels=16, n_fft=256, hop_length=64,
                           width=8, embed_dim=8)
    torch.manual_seed(12345)
    before = torch.random.get_rng_state()
    m1 = train_classifier(audio, names, cfg, steps=2, batch_size=4, seed=7)
    assert torch.equal(torch.random.get_rng_state(), before), "train_classifier changed the global RNG state"
    torch.manual_seed(999)  # a different global state must not change the result: only `seed` decides
    m2 = train_classifier(audio, names, cfg, steps=2, batch_size=4, seed=7)
    for (k, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k
