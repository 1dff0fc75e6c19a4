"""CLAP audio tower, class labels, numbers and timing."""

from __future__ import annotations

import math
import pickle

import pytest
import torch

from sonodiff.conditioning import (
    ClassLabelConditioner,
    ClassLabelConfig,
    NumberConditioner,
    NumberConfig,
    TimingConditioner,
    TimingConfig,
    from_config,
    load_conditioner,
    save_conditioner,
)
from sonodiff.conditioning.numbers import number_features


# ------------------------------------------------------------------------------ CLAP audio
def test_clap_audio_shapes_batch_invariance_and_truncation(tiny_clap_audio_dir):
    enc = from_config({"type": "clap_audio", "path": tiny_clap_audio_dir})
    assert enc.sample_rate == 16000 and enc.pooled_dim == enc.out_dim == 24 and enc.token_dim == 0
    g = torch.Generator().manual_seed(0)
    clips = [0.1 * torch.randn(16000, generator=g), 0.1 * torch.randn(9000, generator=g)]
    cond = enc(enc.tokenize(clips, sample_rate=16000))
    assert cond.pooled.shape == (2, 24) and cond.tokens is None
    torch.testing.assert_close(cond.pooled.norm(dim=-1), torch.ones(2))
    assert not torch.allclose(cond.pooled[0], cond.pooled[1], atol=1e-3)
    alone = enc(enc.tokenize([clips[1]], sample_rate=16000)).pooled[0]
    torch.testing.assert_close(alone, cond.pooled[1], atol=1e-5, rtol=1e-5)
    # longer than max_length_s (1 s): cut to its first second, deterministically
    long = torch.cat([clips[0], 0.1 * torch.randn(8000, generator=g)])
    a = enc(enc.tokenize((long[None], 16000))).pooled  # the single-argument form
    torch.testing.assert_close(a, cond.pooled[:1], atol=1e-5, rtol=1e-5)
    tok = pickle.loads(pickle.dumps(enc.get_tokenizer()))
    torch.testing.assert_close(tok(clips, 16000)["input_features"], enc.tokenize(clips, 16000)["input_features"])


def test_clap_audio_errors(tiny_clap_audio_dir, tmp_path):
    enc = from_config({"type": "clap_audio", "path": tiny_clap_audio_dir})
    with pytest.raises(ValueError, match="expects 16000 Hz"):
        enc.tokenize(torch.zeros(1, 8000), sample_rate=8000)
    with pytest.raises(ValueError, match="sample_rate"):
        enc.tokenize(torch.zeros(1, 8000))
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        enc.tokenize(torch.zeros(1, 2, 8000), sample_rate=16000)
    with pytest.raises(FileNotFoundError, match="no_clap_here"):
        from_config({"type": "clap_audio", "path": str(tmp_path / "no_clap_here")})
    with pytest.raises(ValueError, match="needs path"):
        from_config({"type": "clap_audio"})


# ------------------------------------------------------------------------------ class labels
def test_class_labels_ints_strings_null_and_errors():
    cfg = ClassLabelConfig(num_classes=3, labels=["zero", "one", "two"], dim=8)
    c = ClassLabelConditioner(cfg)
    b = c.tokenize(["two", 0, None, "one"])
    assert b["labels"].tolist() == [2, 0, 3, 1]  # None -> the null class, index num_classes
    cond = c(b)
    assert cond.pooled.shape == (4, 8) and c.pooled_dim == 8 and c.token_dim == 0
    torch.testing.assert_close(cond.pooled, c.table.weight[[2, 0, 3, 1]])
    assert c.table.weight.shape == (4, 8) and c.table.weight.requires_grad  # learned, null row included
    with pytest.raises(ValueError, match=r"unknown label 'three'; valid labels: \['zero', 'one', 'two'\]"):
        c.tokenize(["three"])
    with pytest.raises(ValueError, match="out of range"):
        c.tokenize([3])
    with pytest.raises(ValueError, match="int, a str or None"):
        c.tokenize([True])
    with pytest.raises(ValueError, match="no label list"):
        ClassLabelConditioner(ClassLabelConfig(num_classes=3, dim=4)).tokenize(["zero"])
    with pytest.raises(ValueError, match="labels has 2 names"):
        ClassLabelConfig(num_classes=3, labels=("a", "b"))


def test_class_label_save_load_round_trip(tmp_path):
    torch.manual_seed(1)
    c = ClassLabelConditioner(ClassLabelConfig(num_classes=5, labels=tuple("abcde"), dim=6, dropout=0.2))
    save_conditioner(c, tmp_path)
    back = load_conditioner(tmp_path)
    assert back.config == c.config
    b = c.tokenize(list("edcba") + [None])
    torch.testing.assert_close(back(b).pooled, c(b).pooled, rtol=0, atol=0)
    (tmp_path / "conditioner.safetensors").unlink()
    with pytest.raises(ValueError, match="learned tensors"):
        load_conditioner(tmp_path)


# ------------------------------------------------------------------------------ numbers and timing
def test_number_features_closed_form():
    u = torch.tensor([0.0, 0.25, 1.0])
    f = number_features(u, 3)
    w = torch.tensor([math.pi, 2 * math.pi, 4 * math.pi])
    want = torch.cat([u[:, None], torch.cos(u[:, None] * w), torch.sin(u[:, None] * w)], dim=1)
    torch.testing.assert_close(f, want)


def test_number_conditioner_normalises_and_checks_range():
    c = NumberConditioner(NumberConfig(min_value=10.0, max_value=30.0, dim=8, num_freqs=4))
    b = c.tokenize([10, 20.0, 30.0])
    cond = c(b)
    assert cond.pooled.shape == (3, 8) and cond.tokens is None
    # the MLP sees the normalised value: (20 - 10) / 20 = 0.5
    torch.testing.assert_close(cond.pooled[1], c.embed.mlp(number_features(torch.tensor([0.5]), 4))[0])
    assert not torch.allclose(cond.pooled[0], cond.pooled[2])
    cond.pooled.sum().backward()
    assert c.embed.mlp[0].weight.grad is not None  # trainable by default
    with pytest.raises(ValueError, match=r"outside the configured range \[10.0, 30.0\]"):
        c.tokenize([31.0])
    with pytest.raises(ValueError, match="configured range"):
        c({"values": torch.tensor([5.0])})
    with pytest.raises(ValueError, match="finite"):
        c.tokenize([float("nan")])


def test_timing_conditioner_routes():
    c = TimingConditioner(TimingConfig(max_seconds=60.0, dim=8))
    b = c.tokenize([{"seconds_start": 0.0, "seconds_total": 10.0}, {"seconds_start": 12.5, "seconds_total": 47}])
    assert set(b) == {"seconds_start", "seconds_total"}
    cond = c(b)
    assert cond.tokens.shape == (2, 2, 8) and cond.mask.all() and cond.pooled.shape == (2, 16)
    assert c.token_dim == 8 and c.pooled_dim == 16
    torch.testing.assert_close(cond.pooled, cond.tokens.reshape(2, 16))  # pooled = [start, total]
    torch.testing.assert_close(cond.tokens[:, 0], c.start(torch.tensor([0.0, 12.5])))
    with pytest.raises(ValueError, match="seconds_total"):
        c.tokenize([{"seconds_start": 0.0}])
    with pytest.raises(ValueError, match="outside"):
        c.tokenize([{"seconds_start": 0.0, "seconds_total": 61.0}])
    assert pickle.loads(pickle.dumps(c.get_tokenizer()))([{"seconds_start": 1, "seconds_total": 2}])[
        "seconds_total"].tolist() == [2.0]
