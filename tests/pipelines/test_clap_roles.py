"""The in-house CLAP in the pipeline: re-ranking (best_of) and gradient guidance, on a tiny exported model."""

from __future__ import annotations

import pytest
import torch

from sonodiff.eval.clap import ClapConfig, ClapNet, InHouseClap, clap_feature_score, clap_scorer


def _clap(pipe, **over):
    c = pipe.codec.config
    torch.manual_seed(0)
    cfg = ClapConfig(**{"sample_rate": c.sample_rate, "n_fft": c.n_fft, "hop_length": c.hop_length, "n_mels": c.n_mels,
                        "f_min": c.f_min, "f_max": c.f_max, "width": 8, "embed_dim": 16, "text_hidden": 32, **over})
    return InHouseClap(ClapNet(cfg))


def test_best_of_keeps_the_candidate_the_clap_scores_highest(tiny_model_dir):
    from sonodiff.pipelines import Pipeline

    pipe = Pipeline.from_pretrained(tiny_model_dir)
    clap = _clap(pipe)
    score = clap_scorer(clap)
    all4 = pipe(["high"], num_per_prompt=4, seeds=[10, 11, 12, 13])
    s = score(all4.audio, all4.sample_rate, list(all4.prompts))
    best = pipe.best_of(["high"], score, num_candidates=4, seed=10)
    assert best.seeds == (10 + int(s.argmax()),)
    torch.testing.assert_close(best.audio[0], all4.audio[int(s.argmax())])
    with pytest.raises(ValueError, match="text prompt for every sample"):
        score(all4.audio, all4.sample_rate, [None] * 4)


def test_clap_gradient_guidance_raises_the_clap_similarity(tiny_model_dir):
    from sonodiff.pipelines import Pipeline

    pipe = Pipeline.from_pretrained(tiny_model_dir)
    clap = _clap(pipe)
    prompts, seeds = ["high"] * 4, [0, 1, 2, 3]
    plain = pipe(prompts, seeds=seeds)
    guided = pipe(prompts, seeds=seeds, clap_guidance=(clap, 30.0))
    fn = clap_feature_score(clap, pipe.codec, prompts)
    with torch.no_grad():
        s0, s1 = fn(plain.features, None), fn(guided.features, None)
    assert not torch.equal(plain.features, guided.features)
    assert float(s1.mean()) > float(s0.mean()) + 0.01, (s0, s1)
    # zero scale is exactly unguided
    torch.testing.assert_close(pipe(prompts, seeds=seeds, clap_guidance=(clap, 0.0)).features, plain.features)


def test_clap_guidance_refuses_a_clap_of_other_mel_settings(tiny_model_dir):
    from sonodiff.pipelines import Pipeline

    pipe = Pipeline.from_pretrained(tiny_model_dir)
    with pytest.raises(ValueError, match=r"n_mels \(codec 16, CLAP 32\)"):
        pipe(["high"], seeds=[0], clap_guidance=(_clap(pipe, n_mels=32), 1.0))
