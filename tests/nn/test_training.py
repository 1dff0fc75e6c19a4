"""Training behaviour: gradient checkpointing, overfitting one batch with the core's loss, torch.compile,
mixed precision."""

from __future__ import annotations

import pytest
import torch
from _nn_helpers import randn, tiny, wake

from sonodiff.core import Cond, Preconditioned


def _grads(net, x, c, cond):
    net.zero_grad()
    net(x, c, cond).square().mean().backward()
    return {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("dims", [1, 2])
def test_gradient_checkpointing_gives_same_gradients(dims):
    net = wake(tiny(dims, token_dim=8, pooled_dim=4)).train()
    x = randn(2, 1, *((40,) if dims == 1 else (10, 14)))
    c, cond = torch.tensor([0.2, -0.4]), Cond(tokens=randn(2, 3, 8, seed=1), pooled=randn(2, 4, seed=2))
    ref = _grads(net, x, c, cond)
    net.gradient_checkpointing = True
    got = _grads(net, x, c, cond)
    assert (
        ref.keys() == got.keys() and len(ref) == len(list(net.parameters())) - 2
    )  # all but the unused null embeddings
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], rtol=1e-4, atol=1e-6, msg=n)


@pytest.mark.parametrize("dims", [1, 2])
def test_tiny_model_overfits_one_batch(dims):
    """One fixed batch (x0, sigma, noise, tokens): the EDM loss of the core falls at least 10x in 60 Adam steps
    (it falls ~500x by then on a working model; a broken gradient path fails this)."""
    torch.manual_seed(0)
    net = tiny(dims, token_dim=8)
    den = Preconditioned(net, "edm")
    g = torch.Generator().manual_seed(0)
    shape = (4, 1, 64) if dims == 1 else (4, 1, 8, 16)
    t = torch.linspace(0, 1, shape[-1])
    x0 = 0.5 * torch.sin(2 * torch.pi * (torch.arange(1, 5)[:, None] * t)).view(
        4, 1, *[1] * (dims - 1), shape[-1]
    )
    x0 = x0.expand(shape).contiguous()
    sigma = torch.tensor([0.2, 0.5, 1.0, 2.0])
    noise = torch.randn(shape, generator=g)
    cond = Cond(tokens=torch.randn(4, 3, 8, generator=g))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    losses = []
    for _ in range(60):
        loss = den.loss(x0, sigma=sigma, noise=noise, cond=cond).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])


def test_forward_has_no_graph_breaks():
    """Dynamo traces the whole forward (validation included) into one graph: fullgraph=True raises on a break."""
    torch._dynamo.reset()
    net = wake(tiny(1, token_dim=8, pooled_dim=4, concat_channels=1)).eval()
    compiled = torch.compile(net, backend="eager", fullgraph=True)
    x = randn(2, 1, 30)
    cond = Cond(
        tokens=randn(2, 3, 8, seed=1),
        mask=torch.tensor([[True, True, False], [False] * 3]),
        pooled=randn(2, 4, seed=2),
        concat=randn(2, 1, 30, seed=3),
        null=torch.tensor([False, True]),
    )
    with torch.no_grad():
        torch.testing.assert_close(
            compiled(x, torch.tensor([0.1, 3.0]), cond), net(x, torch.tensor([0.1, 3.0]), cond)
        )


@pytest.mark.slow
def test_compiled_output_equals_eager():
    torch._dynamo.reset()
    net = wake(tiny(2, token_dim=8)).eval()
    compiled = torch.compile(net, fullgraph=True)
    x, c = randn(2, 1, 12, 20), torch.tensor([0.1, 3.0])
    cond = Cond(tokens=randn(2, 3, 8, seed=1), mask=torch.tensor([[True, True, False], [True] * 3]))
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, c, cond), net(x, c, cond), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dims", [1, 2])
def test_bfloat16_autocast_is_finite_and_close(dims):
    net = wake(tiny(dims, token_dim=8)).eval()
    x = 3 * randn(2, 1, *((64,) if dims == 1 else (16, 16)))
    c, cond = (
        torch.tensor([-1.0, 1.5]),
        Cond(tokens=randn(2, 4, 8, seed=1), mask=torch.tensor([[1, 1, 0, 0], [0] * 4]).bool()),
    )
    ref = net(x, c, cond)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = net(x, c, cond)
    assert y.dtype == x.dtype and torch.isfinite(y).all()
    assert (y - ref).norm() / ref.norm() < 0.05


def test_norms_compute_in_float32():
    from sonodiff.nn.attention import LayerNorm32
    from sonodiff.nn.blocks import GroupNorm32

    # values whose bf16 variance computation loses everything: large offset, small spread
    x = (1000 + torch.randn(2, 8, 16, generator=torch.Generator().manual_seed(0))).bfloat16()
    gn = GroupNorm32(2, 8)
    ref = torch.nn.functional.group_norm(x.float(), 2, eps=gn.eps)
    assert gn(x).dtype == torch.bfloat16
    torch.testing.assert_close(gn(x).float(), ref, rtol=0.02, atol=0.02)
    ln = LayerNorm32(16)
    torch.testing.assert_close(
        ln(x).float(), torch.nn.functional.layer_norm(x.float(), (16,)), rtol=0.02, atol=0.02
    )
