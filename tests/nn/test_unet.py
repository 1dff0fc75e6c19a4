"""U-Net structure: shapes, presets, config round trips, validation, zero-init contract, determinism."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from _nn_helpers import randn, tiny, wake

from sonodiff.core import Cond, Preconditioned
from sonodiff.core.param import PARAMETERIZATIONS
from sonodiff.nn import (
    NETWORKS,
    UNET_PRESETS,
    UNet,
    UNetConfig,
    build_network,
    load_network,
    save_network,
    unet_config,
)


@pytest.mark.parametrize(
    "dims,size,batch",
    [
        (1, (1,), 1),
        (1, (7,), 3),
        (1, (1001,), 1),
        (1, (64,), 2),
        (2, (1, 1), 1),
        (2, (5, 9), 2),
        (2, (37, 51), 1),
        (2, (16, 16), 3),
    ],
)
def test_output_shape_equals_input_shape(dims, size, batch):
    net = wake(tiny(dims, token_dim=8))
    x = randn(batch, 1, *size)
    cond = Cond(tokens=randn(batch, 3, 8, seed=1))
    y = net(x, torch.linspace(-2, 2, batch), cond)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.isfinite(y).all() and y.abs().sum() > 0


@pytest.mark.parametrize("dims", [1, 2])
def test_padding_is_crop_of_padded_input(dims):
    """An odd size is zero-padded to a multiple of total_factor and cropped: feeding the zero-padded input
    by hand must give the same values on the original positions."""
    net = wake(tiny(dims)).eval()
    tf = net.config.total_factor
    size = (13,) * dims
    padded = (-(-13 // tf) * tf,) * dims  # the next multiple of the total down-sampling factor
    assert padded[0] > 13
    x = randn(2, 1, *size)
    xp = torch.zeros(2, 1, *padded)
    xp[(..., *[slice(0, s) for s in size])] = x
    c = torch.tensor([0.3, -1.0])
    y, yp = net(x, c), net(xp, c)
    torch.testing.assert_close(y, yp[(..., *[slice(0, s) for s in size])], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(UNET_PRESETS))
def test_every_preset_builds_and_keeps_shape(name):
    cfg = unet_config(name, token_dim=32, pooled_dim=16)
    with torch.device("meta"):  # shape-only: no memory, no compute
        net = UNet(cfg)
        size = (4001,) if cfg.dims == 1 else (63, 130)
        x = torch.empty(2, 1, *size)
        cond = Cond(
            tokens=torch.empty(2, 5, 32), mask=torch.ones(2, 5, dtype=torch.bool), pooled=torch.empty(2, 16)
        )
        assert net(x, torch.empty(2), cond).shape == x.shape
    assert net.num_parameters() > 0


def test_preset_table_matches_models():
    from sonodiff.nn import presets
    from sonodiff.nn.presets import preset_table

    table = preset_table(768)
    with torch.device("meta"):
        n = UNet(UNET_PRESETS["small-2d"]).num_parameters()
    assert "| small-2d | 2 |" in table and f"{n / 1e6:.2f} M" in table
    assert table in presets.__doc__, (
        "the documented parameter table is stale; paste preset_table() into presets.py"
    )
    with pytest.raises(ValueError, match="valid names"):
        unet_config("huge-3d")


@pytest.mark.parametrize("param", PARAMETERIZATIONS)
@pytest.mark.parametrize("dims", [1, 2])
def test_fresh_network_gives_exactly_c_skip_x(param, dims):
    net = tiny(dims)
    x = randn(3, 1, *((40,) if dims == 1 else (12, 20)))
    assert net(x, torch.zeros(3)).abs().max() == 0  # zero-initialised output layer
    den = Preconditioned(net, param)
    sigma = torch.tensor([0.05, 0.7, 9.0]) if param != "flow" else torch.tensor([0.05, 0.7, 0.95])
    c_skip = den.param.coefficients(sigma.double())[0].float().view(-1, *[1] * dims, 1)
    assert torch.equal(den(x, sigma), c_skip * x)


def test_config_round_trip_and_save_load(tmp_path):
    net = wake(tiny(2, token_dim=8, pooled_dim=4, concat_channels=2))
    cfg = net.config
    assert UNetConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.dims = 1  # type: ignore[misc]
    save_network(net, tmp_path)
    back = load_network(tmp_path)
    assert back.config == cfg
    x, c = randn(2, 1, 8, 12), torch.tensor([0.1, 0.2])
    cond = Cond(tokens=randn(2, 3, 8, seed=1), pooled=randn(2, 4, seed=2), concat=randn(2, 2, 8, 12, seed=3))
    assert torch.equal(net(x, c, cond), back(x, c, cond))
    assert NETWORKS["unet"] is UNet and isinstance(build_network("unet", cfg.to_dict()), UNet)
    with pytest.raises(ValueError, match="valid names"):
        build_network("dit", cfg)


def test_config_validation_messages():
    with pytest.raises(ValueError, match="did you mean 'channels'"):
        UNetConfig.from_dict({"chanels": [32, 64]})
    with pytest.raises(ValueError, match="factors needs 1 entries"):
        UNetConfig(channels=(32, 64), blocks=(1, 1), attention=(False, True), factors=(2, 2), groups=8)
    with pytest.raises(ValueError, match="groups=32 must divide"):
        UNetConfig(channels=(48, 64), blocks=(1, 1), attention=(False, True), factors=(2,))
    with pytest.raises(ValueError, match="resample must be one of"):
        unet_config("tiny-1d", resample="bilinear")
    with pytest.raises(ValueError, match="dims must be 1 or 2"):
        unet_config("tiny-1d", dims=3)


def test_input_validation():
    net = tiny(1)
    with pytest.raises(ValueError, match=r"x must be \[B, C, T\]"):
        net(torch.zeros(2, 1, 8, 8), torch.zeros(2))
    with pytest.raises(ValueError, match="c_noise must be a"):
        net(torch.zeros(2, 1, 8), torch.zeros(()))
    with pytest.raises(ValueError, match="concat_channels=0"):
        net(torch.zeros(2, 1, 8), torch.zeros(2), Cond(concat=torch.zeros(2, 1, 8)))
    with pytest.raises(ValueError, match="token_dim=0"):
        net(torch.zeros(2, 1, 8), torch.zeros(2), Cond(tokens=torch.zeros(2, 3, 4)))
    net = tiny(1, concat_channels=2, token_dim=4)
    with pytest.raises(ValueError, match=r"cond.concat must have shape \(2, 2, 8\)"):
        net(
            torch.zeros(2, 1, 8),
            torch.zeros(2),
            Cond(concat=torch.zeros(2, 2, 9), tokens=torch.zeros(2, 1, 4)),
        )
    with pytest.raises(ValueError, match="needs cond.concat"):
        net(torch.zeros(2, 1, 8), torch.zeros(2), Cond(tokens=torch.zeros(2, 1, 4)))
    with pytest.raises(ValueError, match=r"tokens must be \[B, L, 4\]"):
        net(
            torch.zeros(2, 1, 8),
            torch.zeros(2),
            Cond(concat=torch.zeros(2, 2, 8), tokens=torch.zeros(2, 1, 5)),
        )
    with pytest.raises(ValueError, match="batch size 3 but x has 2"):
        net(torch.zeros(2, 1, 8), torch.zeros(2), Cond(concat=torch.zeros(3, 2, 8)))


def test_determinism_for_a_seed():
    a, b = wake(tiny(2, seed=5, token_dim=8)), wake(tiny(2, seed=5, token_dim=8))
    c = wake(tiny(2, seed=6, token_dim=8))
    x, cn = randn(2, 1, 12, 12), torch.tensor([0.0, 1.0])
    cond = Cond(tokens=randn(2, 4, 8, seed=1))
    ya, yb = a(x, cn, cond), b(x, cn, cond)
    assert torch.equal(ya, yb) and torch.equal(ya, a(x, cn, cond))
    assert not torch.allclose(ya, c(x, cn, cond))


# ------------------------------------------------------------------ patching (config.patch)
@pytest.mark.parametrize("dims", [1, 2])
def test_space_to_depth_layout_and_round_trip(dims):
    from sonodiff.nn.unet import depth_to_space, space_to_depth

    x = randn(2, 3, *([6] * dims))
    y = space_to_depth(x, 2)
    assert y.shape == (2, 3 * 2 ** dims, *([3] * dims))
    if dims == 1:
        for c in range(3):
            for i in range(2):
                assert torch.equal(y[:, c * 2 + i], x[:, c, i::2])
    else:
        for c in range(3):
            for i in range(2):
                for j in range(2):
                    assert torch.equal(y[:, c * 4 + i * 2 + j], x[:, c, i::2, j::2])
    assert torch.equal(depth_to_space(y, 2), x)


@pytest.mark.parametrize("dims", [1, 2])
def test_patched_unet_is_the_unpatched_unet_on_folded_input(dims):
    """patch = 2 must be exactly space-to-depth, a full-resolution U-Net with 2 ** dims times the channels on the
    folded input, and depth-to-space: copy the weights across and compare."""
    from sonodiff.nn.unet import depth_to_space, space_to_depth

    patched = wake(tiny(dims, patch=2)).eval()
    fold = 2 ** dims
    plain = tiny(dims, in_channels=fold, out_channels=fold).eval()
    plain.load_state_dict(patched.state_dict())
    x = randn(2, 1, *([16] * dims))
    c = torch.tensor([0.3, -1.0])
    torch.testing.assert_close(patched(x, c), depth_to_space(plain(space_to_depth(x, 2), c), 2),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dims,size", [(1, (13,)), (2, (13, 7)), (2, (64, 126))])
def test_patched_unet_any_size_and_zero_init(dims, size):
    net = tiny(dims, patch=2)
    assert net.config.total_factor == 2 * tiny(dims).config.total_factor
    x = randn(2, 1, *size)
    y = Preconditioned(net, "edm", sigma_data=1.0)(x, torch.tensor([0.5, 2.0]))
    assert y.shape == x.shape
    y = wake(net)(x, torch.zeros(2))
    assert y.shape == x.shape and torch.isfinite(y).all() and y.abs().sum() > 0


def test_patch_must_be_positive():
    with pytest.raises(ValueError, match="patch must be >= 1"):
        unet_config("tiny-2d", patch=0)
