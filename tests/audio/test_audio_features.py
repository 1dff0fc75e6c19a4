"""Log-mel features: tones land in the right bin; librosa as a peer; batching and shapes."""

import math

import numpy as np
import pytest
import torch

from sonodiff.audio.features import MelConfig, log_mel, mel_filterbank, mel_frequencies


def tone(f, sr, seconds, amp=0.5):
    t = torch.arange(int(sr * seconds), dtype=torch.float64) / sr
    return (amp * torch.sin(2 * math.pi * f * t)).float()


@pytest.mark.parametrize("scale", ["slaney", "htk"])
@pytest.mark.parametrize("f", [250.0, 1000.0, 2500.0, 6000.0])
def test_sine_peaks_in_the_right_mel_bin(scale, f):
    cfg = MelConfig(sample_rate=16000, n_fft=1024, hop_length=256, n_mels=64, mel_scale=scale)
    m = log_mel(tone(f, 16000, 1.0)[None], cfg)[0]  # [n_mels, frames]
    peak_bin = int(m[:, 4:-4].mean(-1).argmax())
    centres = mel_frequencies(cfg)
    nearest = int((centres - f).abs().argmin())
    # the filter that responds most to f is the one whose centre is nearest f (or its neighbour when
    # f lies almost half-way between two centres)
    assert abs(peak_bin - nearest) <= 1
    lo = centres[peak_bin - 1] if peak_bin > 0 else 0.0
    hi = centres[peak_bin + 1]
    assert lo < f < hi


def test_mel_centres_are_monotonic_and_match_librosa():
    librosa = pytest.importorskip("librosa")
    for scale in ("slaney", "htk"):
        cfg = MelConfig(sample_rate=22050, n_mels=40, f_min=50.0, f_max=9000.0, mel_scale=scale)
        ours = mel_frequencies(cfg).numpy()
        ref = librosa.mel_frequencies(42, fmin=50.0, fmax=9000.0, htk=scale == "htk")[1:-1]
        assert np.allclose(ours, ref, rtol=1e-6)


@pytest.mark.parametrize("power", [1.0, 2.0])
def test_log_mel_matches_librosa(power):
    librosa = pytest.importorskip("librosa")
    cfg = MelConfig(sample_rate=16000, n_fft=512, hop_length=128, n_mels=40, f_min=20.0, f_max=7600.0,
                    power=power, log_floor=1e-5)
    x = torch.randn(8000, generator=torch.Generator().manual_seed(0)) * 0.1
    ours = log_mel(x, cfg).numpy()
    ref = librosa.feature.melspectrogram(y=x.numpy(), sr=16000, n_fft=512, hop_length=128, n_mels=40, fmin=20.0,
                                         fmax=7600.0, power=power, center=True, pad_mode="reflect", htk=False,
                                         norm="slaney")
    ref = np.log(np.maximum(ref, 1e-5))
    assert ours.shape == ref.shape == (40, 8000 // 128 + 1)
    assert np.abs(ours - ref).max() < 2e-3


def test_filterbank_matches_librosa_htk():
    librosa = pytest.importorskip("librosa")
    cfg = MelConfig(sample_rate=16000, n_fft=1024, n_mels=80, mel_scale="htk")
    ref = librosa.filters.mel(sr=16000, n_fft=1024, n_mels=80, htk=True, norm=None)
    assert np.allclose(mel_filterbank(cfg).numpy().T, ref, atol=2e-5)


def test_batched_equals_per_item_and_shapes():
    cfg = MelConfig(sample_rate=8000, n_fft=256, hop_length=64, n_mels=32)
    x = torch.randn(3, 2, 4000, generator=torch.Generator().manual_seed(1))
    batched = log_mel(x, cfg)
    assert batched.shape == (3, 2, 32, cfg.num_frames(4000)) == (3, 2, 32, 4000 // 64 + 1)
    for b in range(3):
        for c in range(2):
            assert torch.allclose(batched[b, c], log_mel(x[b, c], cfg), atol=1e-5)
    assert log_mel(x.double(), cfg).dtype == torch.float64  # follows the input dtype (and device)


def test_log_floor_and_config_validation():
    cfg = MelConfig(sample_rate=8000, n_fft=256, hop_length=64, n_mels=16, log_floor=1e-4)
    m = log_mel(torch.zeros(1000), cfg)
    assert torch.allclose(m, torch.full_like(m, math.log(1e-4)))
    with pytest.raises(ValueError, match="f_max"):
        MelConfig(sample_rate=8000, f_max=6000.0)
    with pytest.raises(ValueError, match="mel_scale"):
        MelConfig(mel_scale="bark")
    with pytest.raises(ValueError, match="too short"):
        log_mel(torch.zeros(10), cfg)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_log_mel_on_gpu_matches_cpu():
    from sonodiff.audio.codecs import MelCodec, MelCodecConfig

    cfg = MelCodecConfig(n_mels=64)
    x = torch.randn(4, 1, 16000, generator=torch.Generator().manual_seed(0)) * 0.1
    cpu = log_mel(x, cfg)
    gpu = log_mel(x.cuda(), cfg)
    assert gpu.device.type == "cuda" and torch.allclose(gpu.cpu(), cpu, atol=1e-3)
    codec = MelCodec(cfg).fit([cpu])
    assert torch.allclose(codec.encode(x.cuda()).cpu(), codec.encode(x), atol=1e-3)
