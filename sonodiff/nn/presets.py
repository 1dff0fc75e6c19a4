"""U-Net presets: ``tiny`` (tests, CPU), ``small``, ``base``, ``large`` for 1-D and 2-D.

``unet_config("base-2d", in_channels=1, out_channels=1, token_dim=768)`` returns the preset with fields
overridden (``dataclasses.replace``, so the result is validated again). Presets fix the architecture; the
conditioning routes (``token_dim``, ``pooled_dim``, ``concat_channels``) and channel counts are set per model.
1-D presets down-sample by 8 then 4 at the high-resolution levels, where waveforms carry little information
per sample and convolutions there dominate the cost; 2-D presets by 2 (mels, images). 1-D latents with
few time steps want smaller factors: override ``factors``.

Parameter counts (``in_channels = out_channels = 1``; regenerate with ``preset_table()``;
``tests/nn`` checks the listed count of ``small-2d``):

| preset | dims | channels | factors | attention levels | params (uncond.) | params (+ cross-attn, D=768) |
|---|---|---|---|---|---|---|
| tiny-1d | 1 | (32, 64) | (4,) | 1,mid | 0.43 M | 0.86 M |
| small-1d | 1 | (32, 128, 256, 256) | (8, 4, 2) | 2,3,mid | 12.02 M | 17.80 M |
| base-1d | 1 | (64, 256, 384, 512, 576) | (8, 4, 2, 2) | 3,4,mid | 63.01 M | 78.89 M |
| large-1d | 1 | (96, 384, 512, 768, 1024) | (8, 4, 2, 2) | 2,3,4,mid | 267.73 M | 320.25 M |
| tiny-2d | 2 | (32, 64) | (2,) | 1,mid | 0.78 M | 1.21 M |
| small-2d | 2 | (64, 128, 256) | (2, 2) | 1,2,mid | 16.81 M | 21.12 M |
| base-2d | 2 | (128, 256, 384, 512) | (2, 2, 2) | 2,3,mid | 92.09 M | 104.41 M |
| large-2d | 2 | (192, 384, 768, 768) | (2, 2, 2) | 1,2,3,mid | 359.63 M | 399.52 M |
"""

from __future__ import annotations

from dataclasses import replace

from sonodiff.nn.config import UNetConfig

__all__ = ["UNET_PRESETS", "preset_table", "unet_config"]

UNET_PRESETS: dict[str, UNetConfig] = {
    "tiny-1d": UNetConfig(
        dims=1, channels=(32, 64), blocks=(1, 1), factors=(4,), attention=(False, True), head_dim=32, groups=8
    ),
    "small-1d": UNetConfig(
        dims=1,
        channels=(32, 128, 256, 256),
        blocks=(2, 2, 2, 2),
        factors=(8, 4, 2),
        attention=(False, False, True, True),
        head_dim=64,
        groups=32,
    ),
    "base-1d": UNetConfig(
        dims=1,
        channels=(64, 256, 384, 512, 576),
        blocks=(2, 2, 2, 2, 2),
        factors=(8, 4, 2, 2),
        attention=(False, False, False, True, True),
        head_dim=64,
        groups=32,
    ),
    "large-1d": UNetConfig(
        dims=1,
        channels=(96, 384, 512, 768, 1024),
        blocks=(2, 2, 2, 3, 3),
        factors=(8, 4, 2, 2),
        attention=(False, False, True, True, True),
        head_dim=64,
        groups=32,
        ff_mult=2,
    ),
    "tiny-2d": UNetConfig(
        dims=2, channels=(32, 64), blocks=(1, 1), factors=(2,), attention=(False, True), head_dim=32, groups=8
    ),
    "small-2d": UNetConfig(
        dims=2,
        channels=(64, 128, 256),
        blocks=(2, 2, 2),
        factors=(2, 2),
        attention=(False, True, True),
        head_dim=64,
        groups=32,
    ),
    "base-2d": UNetConfig(
        dims=2,
        channels=(128, 256, 384, 512),
        blocks=(2, 2, 2, 2),
        factors=(2, 2, 2),
        attention=(False, False, True, True),
        head_dim=64,
        groups=32,
    ),
    "large-2d": UNetConfig(
        dims=2,
        channels=(192, 384, 768, 768),
        blocks=(2, 2, 3, 3),
        factors=(2, 2, 2),
        attention=(False, True, True, True),
        head_dim=64,
        groups=32,
        ff_mult=2,
    ),
}


def unet_config(name: str, **overrides) -> UNetConfig:
    """The preset ``name`` (one of ``UNET_PRESETS``) with ``overrides`` applied and validated."""
    if name not in UNET_PRESETS:
        raise ValueError(f"unknown U-Net preset {name!r}; valid names: {sorted(UNET_PRESETS)}")
    return replace(UNET_PRESETS[name], **overrides)


def preset_table(token_dim: int = 768) -> str:
    """Markdown table of parameter counts: unconditional and with ``token_dim``-wide cross-attention."""
    import torch

    from sonodiff.nn.unet import UNet

    rows = [
        f"| preset | dims | channels | factors | attention levels | params (uncond.) | params (+ cross-attn, D={token_dim}) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, cfg in UNET_PRESETS.items():
        with torch.device("meta"):  # counts only: allocate nothing
            n0 = UNet(cfg).num_parameters()
            n1 = UNet(replace(cfg, token_dim=token_dim)).num_parameters()
        att = ",".join(str(i) for i, a in enumerate(cfg.attention) if a) + (
            ",mid" if cfg.mid_attention else ""
        )
        rows.append(
            f"| {name} | {cfg.dims} | {cfg.channels} | {cfg.factors} | {att} | {n0 / 1e6:.2f} M | {n1 / 1e6:.2f} M |"
        )
    return "\n".join(rows)
