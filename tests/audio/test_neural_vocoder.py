"""Neural vocoder building blocks: the Vocos generator, MPD/MRD discriminators and the GAN/spectral losses."""

import math

import pytest
import torch

from sonodiff.audio.discriminators import (
    DiscriminatorConfig,
    Discriminators,
    MultiPeriodDiscriminator,
    MultiResolutionDiscriminator,
    default_resolutions,
)
from sonodiff.audio.features import MelConfig, log_mel
from sonodiff.audio.gan_losses import (
    MelReconstructionLoss,
    MultiResolutionSTFTLoss,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
    stft_loss_resolutions,
)
from sonodiff.audio.neural_vocoder import NeuralVocoder, NeuralVocoderConfig

torch.set_num_threads(1)

SR = 8000
TINY = {"sample_rate": SR, "n_fft": 256, "hop_length": 40, "n_mels": 24, "dim": 32, "intermediate_dim": 64,
        "num_layers": 2}


def tiny_vocoder(seed=0, **kw):
    torch.manual_seed(seed)
    return NeuralVocoder(NeuralVocoderConfig(**{**TINY, **kw})).eval()


def signal(n, batch=1, seed=0, f0=440.0):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n, dtype=torch.float64) / SR
    sine = 0.5 * torch.sin(2 * math.pi * f0 * t).float()
    return sine + 0.05 * torch.randn(batch, n, generator=g)


def tiny_discriminators():
    torch.manual_seed(0)
    return Discriminators(DiscriminatorConfig(sample_rate=SR, periods=(2, 3), mpd_channels=(4, 8),
                                              resolutions=((64, 16, 64), (128, 32, 128)), mrd_channels=4,
                                              mrd_layers=3))


# ----------------------------------------------------------------------------------------------- generator

@pytest.mark.parametrize("n", [1000, 1040, 1239])
def test_output_length_matches_log_mel_frames(n):
    voc = tiny_vocoder()
    mc = voc.config.mel_config()
    lm = log_mel(signal(n, batch=2), mc)
    frames = lm.shape[-1]
    assert frames == n // mc.hop_length + 1 == mc.num_frames(n)
    with torch.no_grad():
        y = voc(lm)
    assert y.shape == (2, (frames - 1) * mc.hop_length) == (2, voc.num_frames_to_samples(frames))
    assert y.dtype == torch.float32 and torch.isfinite(y).all()


def test_length_trims_and_zero_pads_exactly():
    voc = tiny_vocoder()
    lm = log_mel(signal(1200), voc.config.mel_config())
    with torch.no_grad():
        y = voc(lm)
        n = y.shape[-1]
        short, long = voc(lm, length=n - 7), voc(lm, length=n + 13)
        same = voc(lm, length=n)
    assert short.shape == (1, n - 7) and long.shape == (1, n + 13)
    assert torch.equal(short, y[:, : n - 7]) and torch.equal(long[:, :n], y) and torch.equal(same, y)
    assert torch.count_nonzero(long[:, n:]) == 0
    for bad in (0, -5, 3.5, True):
        with pytest.raises(ValueError, match="length"):
            voc(lm, length=bad)


def test_four_dim_input_gives_channel_dim():
    voc = tiny_vocoder()
    lm = log_mel(signal(800, batch=3)[:, None], voc.config.mel_config())  # [B, 1, M, F]
    assert lm.ndim == 4
    with torch.no_grad():
        y4, y3 = voc(lm), voc(lm[:, 0])
    assert y4.shape == (3, 1, y3.shape[-1]) and torch.equal(y4[:, 0], y3)
    with pytest.raises(ValueError, match="one channel"):
        voc(lm.expand(3, 2, -1, -1))
    with pytest.raises(ValueError, match="n_mels=24"):
        voc(torch.zeros(1, 23, 10))
    with pytest.raises(ValueError, match="floating-point"):
        voc(torch.zeros(1, 24, 10, dtype=torch.long))


def test_batch_invariance():
    voc = tiny_vocoder()
    lm = log_mel(signal(1000, batch=4, seed=3), voc.config.mel_config())
    lm[2] = lm[2] * 0.3 - 4.0  # very different rows must not leak into each other
    with torch.no_grad():
        full = voc(lm)
        for k in range(4):
            alone = voc(lm[k : k + 1])[0]
            assert (full[k] - alone).abs().max() < 1e-5


def test_bf16_autocast_keeps_float32_output_and_matches():
    voc = tiny_vocoder()
    lm = log_mel(signal(800), voc.config.mel_config())
    with torch.no_grad():
        ref = voc(lm)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = voc(lm)
    assert y.dtype == torch.float32
    assert (y - ref).abs().max() < 0.05 * ref.abs().max() + 1e-6


def test_default_parameter_count_is_under_5m(record_property):
    voc = NeuralVocoder(NeuralVocoderConfig())
    n = voc.num_parameters()
    record_property("neural_vocoder_parameters", n)
    print(f"NeuralVocoder default config: {n:,} parameters")
    assert 1_000_000 < n < 5_000_000
    assert n == sum(p.numel() for p in voc.parameters())


def test_config_round_trips_through_mel_config():
    cfg = NeuralVocoderConfig(**TINY)
    mc = cfg.mel_config()
    assert mc.power == 1.0 and mc.center and mc.window == "hann" and mc.hop_length == 40
    back = NeuralVocoderConfig.from_mel_config(mc, dim=32, intermediate_dim=64, num_layers=2)
    assert back == cfg
    assert NeuralVocoderConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.resolved_layer_scale_init == 0.5 and cfg.resolved_head_n_fft == 256


@pytest.mark.parametrize("field, value", [
    ("dim", 0), ("num_layers", -1), ("kernel_size", 4), ("hop_length", 2.5), ("n_mels", True),
    ("head_n_fft", 255), ("head_n_fft", 64), ("win_length", 512), ("mel_scale", "bark"), ("log_floor", 0.0),
    ("layer_scale_init", -1.0), ("f_max", 5000.0),
])
def test_vocoder_config_errors_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        NeuralVocoderConfig(**{**TINY, field: value})


def test_from_mel_config_rejects_other_front_ends_and_unknown_keys():
    with pytest.raises(ValueError, match="power"):
        NeuralVocoderConfig.from_mel_config(MelConfig(power=2.0))
    with pytest.raises(ValueError, match="center"):
        NeuralVocoderConfig.from_mel_config(MelConfig(center=False))
    with pytest.raises(ValueError, match="did you mean 'num_layers'"):
        NeuralVocoderConfig.from_mel_config(MelConfig(), num_layer=4)
    with pytest.raises(ValueError, match="did you mean 'dim'"):
        NeuralVocoderConfig.from_dict({"dims": 3})


# ------------------------------------------------------------------------------------------ discriminators

def test_discriminators_one_logit_per_sub_discriminator_and_gradients_reach_audio():
    disc = tiny_discriminators()
    audio = signal(1000, batch=2).requires_grad_(True)
    logits, feats = disc(audio)
    assert len(logits) == len(feats) == 2 + 2
    assert all(lg.shape[0] == 2 for lg in logits)
    assert all(len(f) > 0 and all(t.shape[0] == 2 for t in f) for f in feats)
    sum(lg.mean() for lg in logits).backward()
    assert audio.grad is not None and torch.isfinite(audio.grad).all() and audio.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in disc.parameters())


def test_discriminators_are_batch_independent():
    disc = tiny_discriminators()
    audio = signal(900, batch=3, seed=1)
    audio[1] *= 4.0
    with torch.no_grad():
        full, _ = disc(audio)
        alone, _ = disc(audio[:1])
    for a, b in zip(full, alone):
        assert (a[:1] - b).abs().max() < 1e-5


def test_mpd_and_mrd_on_their_own():
    audio = signal(700, batch=1)  # 700 % 3 and % 11 != 0: reflect-padded to the period
    mpd = MultiPeriodDiscriminator((3, 11), channels=(4,))
    lg, ft = mpd(audio)
    assert [t.shape[-1] for t in lg] == [3, 11] and len(ft[0]) == 2
    mrd = MultiResolutionDiscriminator(((64, 16, 48),), channels=4, layers=2)
    lg, ft = mrd(audio[:, None])  # [B, 1, T] is accepted too
    assert len(lg) == 1 and len(ft[0]) == 2
    with pytest.raises(ValueError, match="too short"):
        mrd(audio[:, :20])
    assert default_resolutions(8000) == ((128, 32, 128), (256, 64, 256), (512, 128, 512))
    assert default_resolutions(24000) == ((512, 128, 512), (1024, 256, 1024), (2048, 512, 2048))


@pytest.mark.parametrize("field, value", [("periods", ()), ("mpd_channels", (4, 0)), ("mrd_channels", 0),
                                          ("mpd_kernel_size", 4), ("resolutions", ((64, 16, 128),)),
                                          ("sample_rate", -1)])
def test_discriminator_config_errors_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        DiscriminatorConfig(**{field: value})


# ------------------------------------------------------------------------------------------------- losses

REAL = [torch.tensor([0.5, 2.0, -1.0]), torch.tensor([[1.0, 0.0]])]
FAKE = [torch.tensor([-2.0, 0.0, 0.5]), torch.tensor([[0.0, -0.5]])]


def test_discriminator_loss_matches_hand_computed_values():
    # hinge, disc 0: relu(1 - r) = [0.5, 0, 2] -> 5/6; relu(1 + f) = [0, 1, 1.5] -> 5/6
    #        disc 1: relu(1 - r) = [0, 1] -> 1/2;      relu(1 + f) = [1, 0.5] -> 3/4
    loss, m = discriminator_loss(REAL, FAKE, "hinge")
    assert loss.item() == pytest.approx((5 / 6 + 1 / 2) / 2 + (5 / 6 + 3 / 4) / 2, abs=1e-6)
    assert m["d_loss_real"].item() == pytest.approx((5 / 6 + 1 / 2) / 2, abs=1e-6)
    assert m["d_loss_fake"].item() == pytest.approx((5 / 6 + 3 / 4) / 2, abs=1e-6)
    assert m["d_real_logit"].item() == pytest.approx((0.5 + 0.5) / 2, abs=1e-6)
    # lsgan, disc 0: (1 - r)^2 = [0.25, 1, 4] -> 1.75; f^2 = [4, 0, 0.25] -> 17/12
    #        disc 1: (1 - r)^2 = [0, 1] -> 0.5;         f^2 = [0, 0.25] -> 0.125
    loss, m = discriminator_loss(REAL, FAKE, "lsgan")
    assert loss.item() == pytest.approx((1.75 + 0.5) / 2 + (17 / 12 + 0.125) / 2, abs=1e-6)


def test_generator_adversarial_loss_matches_hand_computed_values():
    # hinge: relu(1 - f) = [3, 1, 0.5] -> 1.5 and [1, 1.5] -> 1.25; lsgan: [9, 1, 0.25] -> 41/12, [1, 2.25] -> 1.625
    assert generator_adversarial_loss(FAKE, "hinge").item() == pytest.approx((1.5 + 1.25) / 2, abs=1e-6)
    assert generator_adversarial_loss(FAKE, "lsgan").item() == pytest.approx((41 / 12 + 1.625) / 2, abs=1e-6)


def test_gan_loss_input_errors():
    with pytest.raises(ValueError, match="valid: \\['hinge', 'lsgan'\\]"):
        generator_adversarial_loss(FAKE, "wgan")
    with pytest.raises(ValueError, match="one of each"):
        discriminator_loss(REAL, FAKE[:1])
    with pytest.raises(ValueError, match="differ"):
        discriminator_loss(REAL, [FAKE[0], torch.zeros(3)])
    with pytest.raises(ValueError, match="non-empty"):
        generator_adversarial_loss([])


def test_feature_matching_loss():
    g = torch.Generator().manual_seed(0)
    feats = [[torch.randn(2, 4, 5, generator=g), torch.randn(2, 3, generator=g)], [torch.randn(2, 7, generator=g)]]
    assert feature_matching_loss(feats, [[t.clone() for t in f] for f in feats]).item() == 0.0
    shifted = [[t + 0.5 for t in feats[0]], [feats[1][0] - 2.0]]
    # mean over the three layers of mean |diff| = (0.5 + 0.5 + 2.0) / 3
    assert feature_matching_loss(feats, shifted).item() == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="layer 1"):
        feature_matching_loss(feats, [[feats[0][0], torch.zeros(2, 4)], feats[1]])


def test_multi_resolution_stft_loss():
    loss = MultiResolutionSTFTLoss(sample_rate=SR)
    assert loss.resolutions == stft_loss_resolutions(SR) == ((256, 40, 200), (512, 80, 400), (128, 17, 80))
    x = signal(2000, batch=2)
    assert loss(x, x.clone()).item() == 0.0
    y = x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    assert loss(x, y).item() > 0.05 and loss(0.5 * x, x).item() > 0.05
    with pytest.raises(ValueError, match="same shape"):
        loss(x, x[:, :-1])
    with pytest.raises(ValueError, match="exactly one"):
        MultiResolutionSTFTLoss()


def test_mel_reconstruction_loss():
    mc = NeuralVocoderConfig(**TINY).mel_config()
    loss = MelReconstructionLoss(mc)
    x = signal(1000, batch=2)
    assert loss(x, x.clone()).item() == 0.0
    expected = (log_mel(x * 0.5, mc) - log_mel(x, mc)).abs().mean()
    assert loss(x * 0.5, x).item() == pytest.approx(expected.item(), rel=1e-6)
    assert loss(x * 0.5, x).item() == pytest.approx(math.log(2), rel=0.05)  # mostly above the floor
    with pytest.raises(ValueError, match="same shape"):
        loss(x, x[:1])


# ---------------------------------------------------------------------------------------------- overfit

def test_tiny_vocoder_overfits_one_sine():
    torch.manual_seed(0)
    voc = NeuralVocoder(NeuralVocoderConfig(**TINY))
    target = (0.5 * torch.sin(2 * math.pi * 440.0 * torch.arange(SR // 4) / SR))[None]  # 0.25 s
    mel_loss = MelReconstructionLoss(voc.config.mel_config())
    stft_loss = MultiResolutionSTFTLoss(sample_rate=SR)
    lm = log_mel(target, voc.config.mel_config())
    # a high rate: the floor-level bins need log-magnitudes near log(1e-5) from an init near 0
    opt = torch.optim.Adam(voc.parameters(), lr=2e-2)

    def step():
        y = voc(lm, length=target.shape[-1])
        m = mel_loss(y, target)
        return m, m + stft_loss(y, target)

    with torch.no_grad():
        first = step()[0].item()
    for _ in range(150):
        opt.zero_grad()
        step()[1].backward()
        opt.step()
    with torch.no_grad():
        last = step()[0].item()
    assert last < first / 3, (first, last)
