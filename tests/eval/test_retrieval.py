"""Retrieval recall@k and its chance rates on constructed cases; the contrastive loss's duplicate-caption targets."""

from __future__ import annotations

import math

import pytest
import torch

from sonodiff.eval.clap import _chance_any, contrastive_loss, retrieval_recall, zero_shot_accuracy


def test_recall_on_a_constructed_pool():
    # 4 clips, captions a, b, b, c; audio embeddings are the basis vectors, text embeddings chosen per caption
    e = torch.eye(4)
    audio = e
    caps = ["a", "b", "b", "c"]
    # text "a" points at clip 0 (rank 1); "b" points at clip 3 first, then clip 2 (a "b" clip at rank 2);
    # "c" points at clip 0 first, clip 3 third
    ta = e[0]
    tb = torch.nn.functional.normalize(0.9 * e[3] + 0.5 * e[2] + 0.1 * e[1], dim=0)
    tc = torch.nn.functional.normalize(0.9 * e[0] + 0.5 * e[1] + 0.2 * e[3], dim=0)
    text = torch.stack([ta, tb, tb, tc])
    r = retrieval_recall(audio, text, caps, ks=(1, 2, 3))
    assert r["pool"] == 4 and r["distinct_captions"] == 3
    assert r["t2a_R@1"] == pytest.approx(1 / 3) and r["t2a_R@2"] == pytest.approx(2 / 3) and r["t2a_R@3"] == 1.0
    # audio -> text over the distinct captions a, b, c: clip 0 ranks a (1.0) then c; clip 1 ranks c (0.5/..) ...
    sims = audio @ torch.stack([ta, tb, tc]).T
    want1 = sum(int(sims[i].argmax()) == {"a": 0, "b": 1, "c": 2}[c] for i, c in enumerate(caps)) / 4
    assert r["a2t_R@1"] == pytest.approx(want1)
    assert r["a2t_R@3"] == 1.0 and r["a2t_R@1_chance"] == pytest.approx(1 / 3)


def test_chance_rate_matches_a_direct_count():
    from itertools import combinations

    n, r, k = 7, 2, 3
    hits = sum(any(i < r for i in top) for top in combinations(range(n), k))
    assert _chance_any(n, r, k) == pytest.approx(hits / math.comb(n, k))
    assert _chance_any(10, 1, 10) == 1.0 and _chance_any(5, 4, 2) == 1.0


def test_random_embeddings_retrieve_at_the_chance_rate():
    g = torch.Generator().manual_seed(0)
    n = 400
    a = torch.nn.functional.normalize(torch.randn(n, 32, generator=g), dim=1)
    t = torch.nn.functional.normalize(torch.randn(n, 32, generator=g), dim=1)
    r = retrieval_recall(a, t, [f"c{i}" for i in range(n)])
    assert abs(r["t2a_R@10"] - r["t2a_R@10_chance"]) < 4 * math.sqrt(0.025 * 0.975 / n)
    assert r["t2a_R@10_chance"] == pytest.approx(10 / n)


def test_contrastive_loss_treats_equal_captions_as_positives():
    a = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.05], [0.0, 1.0]]), dim=1)
    ids = torch.tensor([0, 0, 1])
    loss, hits = contrastive_loss(a, a, ids, torch.tensor(10.0))
    assert hits.tolist() == [1.0, 1.0, 1.0]  # clip 0's best text is clip 1's: the same caption, a hit
    # swapping the two same-caption texts leaves the loss unchanged (targets spread evenly over them)
    loss2, _ = contrastive_loss(a, a[[1, 0, 2]], ids, torch.tensor(10.0))
    torch.testing.assert_close(loss.sum(), loss2.sum())
    assert zero_shot_accuracy(a, a[[0, 2]], [0, 0, 1]) == 1.0


def test_in_house_clap_embeddings_do_not_depend_on_the_batch():
    from sonodiff.eval.clap import ClapConfig, ClapNet, InHouseClap, clap_score

    torch.manual_seed(0)
    clap = InHouseClap(ClapNet(ClapConfig(sample_rate=8000, n_fft=256, hop_length=64, n_mels=16, width=8,
                                          embed_dim=16, text_hidden=32)))
    g = torch.Generator().manual_seed(1)
    clips = [0.1 * torch.randn(n, generator=g) for n in (3000, 8000, 3000, 5000)]
    alone = torch.cat([clap.embed_audio([c], 8000) for c in clips])
    together = clap.embed_audio(clips, 8000, batch_size=2)
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    caps = ["a", "b", "c", "d"]
    s = clap_score(clap, clips, 8000, caps)
    torch.testing.assert_close(clap_score(clap, clips[::-1], 8000, caps[::-1]), s.flip(0), atol=1e-5, rtol=1e-5)
