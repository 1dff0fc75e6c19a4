"""Audio I/O, channel policy, resampling, normalisation and trimming against closed forms."""

import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from sonodiff.audio.io import (
    RESAMPLE_QUALITY,
    apply_channel_policy,
    load_audio,
    loudness,
    loudness_normalize,
    peak_normalize,
    resample,
    rms_normalize,
    save_audio,
    silence_bounds,
    trim_silence,
)


def tone(f, sr, seconds, amp=0.5, phase=0.0):
    t = torch.arange(round(sr * seconds), dtype=torch.float64) / sr
    return (amp * torch.sin(2 * math.pi * f * t + phase)).float()


def dominant_hz(x, sr):
    spec = np.abs(np.fft.rfft(np.asarray(x, dtype=np.float64) * np.hanning(len(x))))
    return np.argmax(spec) * sr / len(x)


@pytest.mark.parametrize("ext", ["wav", "flac", "ogg", "mp3"])
def test_load_formats_shape_rate_and_content(tmp_path, ext):
    sr = 16000
    x = torch.stack([tone(440, sr, 1.0), tone(880, sr, 1.0, amp=0.25)])  # [2, T]
    p = tmp_path / f"a.{ext}"
    sf.write(str(p), x.T.numpy(), sr)
    audio, got_sr = load_audio(p)
    assert got_sr == sr and audio.dtype == torch.float32 and audio.shape[0] == 2
    # lossy codecs may pad/delay a little; the tone frequencies must survive
    assert abs(audio.shape[1] - sr) < 0.1 * sr
    assert abs(dominant_hz(audio[0], sr) - 440) < 3 and abs(dominant_hz(audio[1], sr) - 880) < 3
    if ext in ("wav", "flac"):  # 16-bit PCM: exact to quantisation
        assert torch.allclose(audio, x, atol=1.0 / 32768 + 1e-6)


def test_channel_policies():
    x = torch.tensor([[1.0, 0.0, -1.0], [0.0, 0.5, 1.0]])
    assert torch.equal(apply_channel_policy(x, "mono"), torch.tensor([[0.5, 0.25, 0.0]]))
    assert torch.equal(apply_channel_policy(x[:1], "stereo"), torch.cat([x[:1], x[:1]]))
    assert torch.equal(apply_channel_policy(x, "stereo"), x)
    assert torch.equal(apply_channel_policy(x, "keep"), x)
    with pytest.raises(ValueError, match="1 or 2 channels"):
        apply_channel_policy(torch.zeros(3, 4), "stereo")
    with pytest.raises(ValueError, match="valid"):
        apply_channel_policy(x, "surround")


def test_load_applies_policy_and_resamples(tmp_path):
    x = torch.stack([tone(1000, 44100, 0.5), tone(1000, 44100, 0.5)])
    sf.write(str(tmp_path / "s.wav"), x.T.numpy(), 44100, subtype="FLOAT")
    audio, sr = load_audio(tmp_path / "s.wav", sample_rate=16000, channels="mono")
    assert sr == 16000 and audio.shape == (1, 8000)


@pytest.mark.parametrize("quality", sorted(RESAMPLE_QUALITY))
@pytest.mark.parametrize("orig,new,f", [(44100, 16000, 3000.0), (8000, 16000, 1000.0), (22050, 24000, 5000.0)])
def test_resample_preserves_frequency_and_duration(quality, orig, new, f):
    x = tone(f, orig, 2.0)
    y = resample(x[None], orig, new, quality)[0]
    assert y.shape[-1] == math.ceil(x.shape[-1] * new / orig)  # duration preserved
    assert abs(dominant_hz(y, new) - f) <= new / y.shape[-1] + 1e-9  # within one FFT bin
    # amplitude preserved in the pass band (ignore filter edges)
    mid = y[new // 4: -new // 4]
    assert abs(float(mid.abs().max()) - 0.5) < 0.01


def test_resample_removes_content_above_new_nyquist():
    x = tone(7000, 44100, 1.0)  # above 4 kHz Nyquist of 8 kHz
    y = resample(x[None], 44100, 8000, "high")[0]
    assert float(y[1000:-1000].abs().max()) < 1e-3


def test_peak_and_rms_normalize():
    x = torch.randn(2, 3, 1000, generator=torch.Generator().manual_seed(0))
    p = peak_normalize(x, -6.0)
    assert torch.allclose(p.abs().amax(dim=(-2, -1)), torch.full((2,), 10 ** (-6 / 20)), atol=1e-6)
    r = rms_normalize(x, -20.0)
    assert torch.allclose(r.pow(2).mean(dim=(-2, -1)).sqrt(), torch.full((2,), 0.1), atol=1e-6)
    with pytest.raises(ValueError, match="all-zero"):
        peak_normalize(torch.zeros(1, 10))


def test_loudness_reference_and_normalisation():
    sr = 48000
    # ITU-R BS.1770-4: a 0 dBFS 997 Hz sine in one channel reads -3.01 LKFS
    x = tone(997, sr, 3.0, amp=1.0)[None]
    assert abs(float(loudness(x, sr)) - (-3.01)) < 0.05
    noise = 0.05 * torch.randn(2, 2 * sr, generator=torch.Generator().manual_seed(1))
    for target in (-23.0, -16.0):
        y = loudness_normalize(noise, sr, target)
        assert abs(float(loudness(y, sr)) - target) < 0.01
    with pytest.raises(ValueError, match="silent"):
        loudness_normalize(torch.zeros(1, sr), sr)
    with pytest.raises(ValueError, match="0.4 s"):
        loudness(torch.ones(1, 100), sr)


def test_trim_silence_bounds():
    sr = 16000
    x = torch.cat([torch.zeros(4000), tone(500, sr, 0.5), torch.zeros(6000)])[None]
    start, end = silence_bounds(x, top_db=40, hop_length=256)
    assert abs(start - 4000) <= 1024 and abs(end - 12000) <= 1024
    y = trim_silence(x, top_db=40)
    assert y.shape[1] == end - start and float(y.abs().max()) == pytest.approx(0.5, abs=1e-3)
    with pytest.raises(ValueError, match="all-silent"):
        trim_silence(torch.zeros(1, 5000))


@pytest.mark.parametrize("ext,subtype", [("wav", "PCM_16"), ("flac", "PCM_24"), ("wav", "FLOAT")])
def test_save_atomic_roundtrip_with_sidecar(tmp_path, ext, subtype):
    x = tone(300, 16000, 0.25)[None].repeat(2, 1)
    p = save_audio(tmp_path / f"out.{ext}", x, 16000, subtype=subtype, sidecar={"caption": "a tone", "f": 300})
    y, sr = load_audio(p)
    assert sr == 16000 and torch.allclose(y, x, atol=2.0 / 32768)
    assert json.loads((tmp_path / "out.json").read_text()) == {"caption": "a tone", "f": 300}
    assert {q.name for q in tmp_path.iterdir()} == {"out.json", f"out.{ext}"}  # no temp files left


def test_save_refuses_clipping_and_keeps_old_file(tmp_path):
    p = tmp_path / "keep.wav"
    save_audio(p, tone(300, 8000, 0.1)[None], 8000)
    before = p.read_bytes()
    with pytest.raises(ValueError, match="clipping"):
        save_audio(p, 2 * torch.ones(1, 100), 8000)
    bad = torch.zeros(1, 100)
    bad[0, 5] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        save_audio(p, bad, 8000)
    with pytest.raises(ValueError, match="writes"):
        save_audio(tmp_path / "x.mp3", torch.zeros(1, 10), 8000)
    assert p.read_bytes() == before and [q.name for q in tmp_path.iterdir()] == ["keep.wav"]


def test_load_rejects_nan_file(tmp_path):
    x = np.zeros(100, np.float32)
    x[3] = np.inf
    sf.write(str(tmp_path / "n.wav"), x, 8000, subtype="FLOAT")
    with pytest.raises(ValueError, match="NaN or inf"):
        load_audio(tmp_path / "n.wav")


def test_k_weighting_matches_bs1770_published_48k_coefficients():
    from sonodiff.audio.io import k_weighting_coefficients

    (b1, a1), (b2, a2) = k_weighting_coefficients(48000)
    # ITU-R BS.1770-4, Tables 1 and 2
    assert np.allclose(b1, [1.53512485958697, -2.69169618940638, 1.19839281085285], atol=1e-9)
    assert np.allclose(a1, [1.0, -1.69065929318241, 0.73248077421585], atol=1e-9)
    assert np.allclose(b2, [1.0, -2.0, 1.0], atol=1e-9)
    assert np.allclose(a2, [1.0, -1.99004745483398, 0.99007225036621], atol=1e-9)
