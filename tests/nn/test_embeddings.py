"""Noise-level features and rotary positions."""

from __future__ import annotations

import pytest
import torch

from sonodiff.nn.embeddings import apply_rope, fourier_features, rope_tables


@pytest.mark.parametrize("values", [torch.linspace(-2.5, 2.5, 501), torch.arange(0, 1000).float()])
def test_noise_features_resolve_both_conventions(values):
    """EDM's log(sigma)/4 (step 0.01) and DDPM timesteps 0..999 (step 1) both map to well separated features."""
    f = fourier_features(values, 128)
    assert f.shape == (len(values), 256) and torch.isfinite(f).all()
    d = torch.cdist(f, f) + torch.eye(len(values)) * 1e9
    assert d.min() > 0.05
    # neighbours are closer than far-apart values (features are not pure aliasing noise)
    assert torch.linalg.norm(f[0] - f[1]) < torch.linalg.norm(f[0] - f[-1])


@pytest.mark.parametrize("shape", [(12,), (4, 6)])
def test_rope_scores_depend_only_on_relative_position(shape):
    d = 8
    cos, sin = rope_tables(shape, d, "cpu")
    n = cos.shape[0]
    g = torch.Generator().manual_seed(0)
    q0, k0 = torch.randn(d, generator=g), torch.randn(d, generator=g)
    q = apply_rope(q0.expand(1, 1, n, d), cos, sin)[0, 0]
    k = apply_rope(k0.expand(1, 1, n, d), cos, sin)[0, 0]
    scores = q @ k.T  # [N, N]
    coords = torch.stack(torch.meshgrid(*[torch.arange(s) for s in shape], indexing="ij"), -1).reshape(n, -1)
    rel = coords[:, None, :] - coords[None, :, :]
    for off in {tuple(r.tolist()) for r in rel.reshape(-1, len(shape))}:
        sel = (rel == torch.tensor(off)).all(-1)
        vals = scores[sel]
        torch.testing.assert_close(vals, vals[:1].expand_as(vals), rtol=1e-4, atol=1e-4)
    # and it does depend on the offset
    assert scores.std() > 1e-3
    # rotation preserves norms
    torch.testing.assert_close(q.norm(dim=-1), q0.norm().expand(n), rtol=1e-5, atol=1e-5)


def test_rope_needs_divisible_head_dim():
    with pytest.raises(ValueError, match="divisible by 4"):
        rope_tables((4, 4), 6, "cpu")


def test_rope_on_queries_and_keys_together_matches_one_at_a_time():
    """The attention block rotates q and k as one [B, N, 2, heads, d] tensor with tables [N, 1, 1, d/2]; that
    must equal rotating each [B, heads, N, d] separately with [N, d/2] tables, and an explicit 2x2 rotation."""
    b, heads, d, shape = 2, 3, 8, (4, 5)
    cos, sin = rope_tables(shape, d, "cpu")
    n = cos.shape[0]
    qk = torch.randn(b, n, 2, heads, d, generator=torch.Generator().manual_seed(1))
    together = apply_rope(qk, cos[:, None, None, :], sin[:, None, None, :])
    for i in range(2):
        one = apply_rope(qk[:, :, i].transpose(1, 2), cos, sin)  # [B, heads, N, d]
        torch.testing.assert_close(together[:, :, i].transpose(1, 2), one)
    x1, x2 = qk[..., : d // 2], qk[..., d // 2:]
    c, s = cos[:, None, None, :], sin[:, None, None, :]
    torch.testing.assert_close(together, torch.cat([x1 * c - x2 * s, x1 * s + x2 * c], -1), rtol=1e-6, atol=1e-6)
