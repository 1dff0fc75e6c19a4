"""The four conditioning routes: cross-attention tokens + mask, pooled, concat, learned null embeddings."""

from __future__ import annotations

import pytest
import torch
from _nn_helpers import randn, tiny, wake

from sonodiff.core import Cond, Preconditioned

B, L, D, P = 3, 6, 8, 5


def cond_net(dims: int):
    return wake(tiny(dims, token_dim=D, pooled_dim=P, concat_channels=2)).eval()


def make_x(dims: int, seed: int = 0):
    return randn(B, 1, *((24,) if dims == 1 else (8, 12)), seed=seed)


@pytest.mark.parametrize("dims", [1, 2])
def test_padded_tokens_do_not_change_output(dims):
    net = cond_net(dims)
    x, c = make_x(dims), torch.tensor([-1.0, 0.0, 2.0])
    concat, pooled = randn(B, 2, *x.shape[2:], seed=3), randn(B, P, seed=4)
    real = randn(B, 3, D, seed=1)
    y_short = net(x, c, Cond(tokens=real, pooled=pooled, concat=concat))
    padded = torch.cat([real, 100 * randn(B, L - 3, D, seed=2)], dim=1)  # garbage in the padding
    mask = torch.tensor([[True] * 3 + [False] * (L - 3)] * B)
    y_pad = net(x, c, Cond(tokens=padded, mask=mask, pooled=pooled, concat=concat))
    torch.testing.assert_close(y_pad, y_short, rtol=1e-5, atol=1e-5)
    # the route is live: the same padding unmasked, or other real tokens, change the output
    y_unmasked = net(x, c, Cond(tokens=padded, pooled=pooled, concat=concat))
    assert (y_unmasked - y_short).abs().max() > 1e-3
    y_other = net(x, c, Cond(tokens=randn(B, 3, D, seed=9), pooled=pooled, concat=concat))
    assert (y_other - y_short).abs().max() > 1e-3


@pytest.mark.parametrize("dims", [1, 2])
def test_fully_masked_row_is_finite_and_ignores_tokens(dims):
    net = cond_net(dims)
    x, c = make_x(dims), torch.zeros(B)
    concat, pooled = randn(B, 2, *x.shape[2:], seed=3), randn(B, P, seed=4)
    mask = torch.tensor([[True] * L, [False] * L, [True, False, True, False, False, False]])
    y1 = net(x, c, Cond(tokens=randn(B, L, D, seed=1), mask=mask, pooled=pooled, concat=concat))
    y2 = net(x, c, Cond(tokens=randn(B, L, D, seed=2), mask=mask, pooled=pooled, concat=concat))
    assert torch.isfinite(y1).all()
    torch.testing.assert_close(y1[1], y2[1], rtol=1e-5, atol=1e-6)  # row 1 sees no token at all
    assert (y1[0] - y2[0]).abs().max() > 1e-3


@pytest.mark.parametrize("dims", [1, 2])
def test_null_rows_use_learned_null_embeddings(dims):
    net = cond_net(dims)
    x, c = make_x(dims), torch.tensor([0.5, 0.5, 0.5])
    concat = randn(B, 2, *x.shape[2:], seed=3)
    null = torch.tensor([False, True, False])
    ca = Cond(tokens=randn(B, L, D, seed=1), pooled=randn(B, P, seed=2), concat=concat, null=null)
    cb = Cond(
        tokens=randn(B, 2, D, seed=5),
        mask=torch.tensor([[True, False]] * B),
        pooled=randn(B, P, seed=6),
        concat=concat,
        null=null,
    )
    ya, yb = net(x, c, ca), net(x, c, cb)
    torch.testing.assert_close(ya[1], yb[1], rtol=1e-5, atol=1e-6)  # null row: given tokens/pooled ignored
    assert (ya[0] - yb[0]).abs().max() > 1e-3  # conditioned rows still follow their conditioning
    # the unconditional model without any tokens/pooled equals the null rows
    y_null = net(x, c, Cond(concat=concat, null=torch.ones(B, dtype=torch.bool)))
    torch.testing.assert_close(y_null[1], ya[1], rtol=1e-4, atol=2e-5)
    torch.testing.assert_close(y_null, net(x, c, ca.null_all()), rtol=1e-4, atol=2e-5)
    # rows are independent: a row's output does not depend on other rows being null
    y_one = net(x[:1], c[:1], ca.index(slice(0, 1)))
    torch.testing.assert_close(y_one[0], ya[0], rtol=1e-5, atol=1e-5)
    # the null embeddings are parameters that receive gradients
    net(x, c, ca).square().mean().backward()
    assert net.null_token.grad.abs().sum() > 0 and net.null_pooled.grad.abs().sum() > 0


def test_missing_route_needs_every_row_null():
    net = cond_net(1)
    x, concat = make_x(1), randn(B, 2, 24)
    with pytest.raises(ValueError, match="expects cond.tokens"):
        net(x, torch.zeros(B), Cond(concat=concat, pooled=randn(B, P)))
    with pytest.raises(ValueError, match="expects cond.pooled"):
        net(x, torch.zeros(B), Cond(concat=concat, tokens=randn(B, 2, D)))
    with pytest.raises(ValueError, match="expects cond.tokens"):
        net(x, torch.zeros(B), Cond(concat=concat, null=torch.tensor([True, False, True])))


@pytest.mark.parametrize("dims", [1, 2])
def test_after_training_steps_each_route_changes_the_output(dims):
    """A fresh network ignores everything (F = 0). Zero-initialised output and residual branches mean the first
    optimizer step can only move ``conv_out`` (every other gradient passes through it and is 0), so after one
    step only ``concat`` (which feeds the trunk through ``conv_in``) changes the output; from the second step
    on every route (tokens, pooled, concat, null) does."""
    torch.manual_seed(0)
    net = tiny(dims, token_dim=D, pooled_dim=P, concat_channels=2)
    den = Preconditioned(net, "edm")
    x0 = make_x(dims)
    cond = Cond(
        tokens=randn(B, L, D, seed=1),
        mask=torch.ones(B, L, dtype=torch.bool),
        pooled=randn(B, P, seed=2),
        concat=randn(B, 2, *x0.shape[2:], seed=3),
        null=torch.tensor([False, True, False]),
    )
    x, c = make_x(dims, seed=7), torch.full((B,), 0.3)
    assert torch.equal(net(x, c, cond), net(x, c, cond.null_all()))  # both exactly 0 before training
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    on = Cond(tokens=cond.tokens, mask=cond.mask, pooled=cond.pooled, concat=cond.concat)
    variants = {
        "tokens": Cond(
            tokens=randn(B, L, D, seed=11), mask=cond.mask, pooled=cond.pooled, concat=cond.concat
        ),
        "pooled": Cond(tokens=cond.tokens, mask=cond.mask, pooled=randn(B, P, seed=12), concat=cond.concat),
        "concat": Cond(
            tokens=cond.tokens, mask=cond.mask, pooled=cond.pooled, concat=randn(B, 2, *x.shape[2:], seed=13)
        ),
        "null": on.null_all(),
    }
    for step in (1, 2):
        opt.zero_grad()
        den.loss(x0, cond=cond, generator=torch.Generator().manual_seed(step)).mean().backward()
        opt.step()
        with torch.no_grad():
            base = net.eval()(x, c, on)
            diffs = {k: (net(x, c, v) - base).abs().max().item() for k, v in variants.items()}
            net.train()
        if step == 1:
            assert diffs["concat"] > 1e-6 and diffs["tokens"] == diffs["pooled"] == diffs["null"] == 0, diffs
        else:
            assert all(d > 1e-6 for d in diffs.values()), diffs
