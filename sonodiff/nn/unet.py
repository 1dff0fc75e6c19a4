"""One U-Net for 1-D (``[B, C, T]``) and 2-D (``[B, C, H, W]``) diffusion, with every conditioning route.

Architecture: the ADM U-Net (Dhariwal & Nichol, "Diffusion Models Beat GANs on Image Synthesis", 2021;
Ho et al., "Denoising Diffusion Probabilistic Models", 2020) with the cross-attention of latent diffusion
(Rombach et al., 2022), made generic over the number of spatial axes:

    conv_in -> [ResBlock (+ Attention)] x blocks[i], Downsample(factors[i])   for each level i
            -> ResBlock, Attention, ResBlock                                    (bottleneck)
            -> [concat skip, ResBlock (+ Attention)] x (blocks[i] + 1), Upsample  for each level, reversed
            -> GroupNorm, SiLU, zero-initialised conv_out

Contract with the core (``sonodiff.core.denoiser.Preconditioned``): ``F = net(x, c_noise, cond)`` with
``D(x, sigma) = c_skip x + c_out F(c_in x, c_noise(sigma), cond)``. Because ``conv_out`` and every residual
branch start at zero, a fresh network returns ``F = 0`` exactly and ``D = c_skip x``.

Conditioning (``sonodiff.core.cond.Cond``), each route switched on by a config field:

- ``cond.concat [B, concat_channels, *S]`` is concatenated to ``x`` along channels (``concat_channels > 0``;
  then it is required, and its spatial shape must equal that of ``x``).
- ``cond.tokens [B, L, token_dim]`` with ``cond.mask [B, L]`` (True = real token) feed cross-attention in
  every attention layer. Padded tokens are masked out; a row with no real token gets zero cross-attention
  output (never NaN).
- ``cond.pooled [B, pooled_dim]`` is projected and added to the noise embedding.
- ``cond.null [B]`` (bool) rows use a learned null token (broadcast over the ``L`` positions, which is
  exactly attention to a single learned null token) and a learned null pooled vector instead of the given
  ones (classifier-free guidance). A route the config has but ``cond`` lacks is allowed only when every row
  is null (e.g. ``Cond(null=torch.ones(B, dtype=torch.bool))``); otherwise it is an error.

Patching (``config.patch = p > 1``): the padded input is folded space-to-depth into ``p ** dims`` times the
channels before ``conv_in`` and the output of ``conv_out`` unfolded back, so every level runs at ``1 / p`` of the
input's size on each axis.

Any length or size: every spatial axis is zero-padded at its end to a multiple of ``config.total_factor``
(the patch side times the product of the down-sampling factors) and the output is cropped back, so the output shape always
equals the input shape. Padding makes the network see a zero tail; for exact translation behaviour feed
sizes that are already multiples of ``total_factor``.

Speed and memory: GroupNorm/LayerNorm in float32 (autocast-safe), attention via
``F.scaled_dot_product_attention``, ``net.gradient_checkpointing = True`` recomputes each block in the
backward pass, and the forward pass has no data-dependent Python branches, so ``torch.compile`` traces it
in one graph (input validation that reads tensor values runs in eager mode only).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from sonodiff.nn.attention import AttentionBlock, CrossContext
from sonodiff.nn.blocks import Downsample, GroupNorm32, ResBlock, Upsample, conv_nd, zero_module
from sonodiff.nn.config import UNetConfig
from sonodiff.nn.embeddings import NoiseEmbedding, rope_tables

__all__ = ["UNet"]


class UNet(nn.Module):
    """``forward(x [B, in_channels, *S], c_noise [B], cond: Cond | None) -> F [B, out_channels, *S]``.

    ``S`` is ``(T,)`` for ``dims=1`` and ``(H, W)`` for ``dims=2``; any sizes (see module docstring).
    ``c_noise`` is any real-valued noise level (``log(sigma) / 4``, a timestep in 0..999, ...).
    """

    config_class = UNetConfig

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        if not isinstance(config, UNetConfig):
            raise TypeError(
                f"UNet needs a UNetConfig, got {type(config).__name__}; use UNetConfig.from_dict(d)"
            )
        cfg = self.config = config
        self.dims, self.in_channels, self.out_channels = cfg.dims, cfg.in_channels, cfg.out_channels
        self.gradient_checkpointing = False
        ch, k, g = cfg.channels, cfg.kernel_size, cfg.groups
        emb_dim = cfg.emb_mult * ch[0]
        self.noise_embed = NoiseEmbedding(emb_dim, cfg.noise_freqs, cfg.pooled_dim)
        self.null_pooled = nn.Parameter(0.02 * torch.randn(cfg.pooled_dim)) if cfg.pooled_dim > 0 else None
        self.null_token = nn.Parameter(0.02 * torch.randn(cfg.token_dim)) if cfg.token_dim > 0 else None

        def res(cin: int, cout: int) -> ResBlock:
            return ResBlock(cfg.dims, cin, cout, emb_dim, groups=g, kernel_size=k, dropout=cfg.dropout)

        def attn(c: int) -> AttentionBlock:
            return AttentionBlock(c, cfg.head_dim, g, token_dim=cfg.token_dim, ff_mult=cfg.ff_mult)

        fold = cfg.patch ** cfg.dims
        self.conv_in = conv_nd(cfg.dims, (cfg.in_channels + cfg.concat_channels) * fold, ch[0], k, padding=k // 2)
        skip_ch = [ch[0]]
        self.down_res, self.down_attn, self.downsample = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        cur = ch[0]
        for i, c in enumerate(ch):
            rs, ats = nn.ModuleList(), nn.ModuleList()
            for _ in range(cfg.blocks[i]):
                rs.append(res(cur, c))
                cur = c
                if cfg.attention[i]:
                    ats.append(attn(c))
                skip_ch.append(c)
            self.down_res.append(rs)
            self.down_attn.append(ats)
            if i < len(ch) - 1:
                self.downsample.append(Downsample(cfg.dims, c, cfg.factors[i], cfg.resample))
                skip_ch.append(c)
        self.mid_res1, self.mid_res2 = res(cur, cur), res(cur, cur)
        self.mid_attn = attn(cur) if cfg.mid_attention else None
        self.up_res, self.up_attn, self.upsample = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(len(ch))):
            rs, ats = nn.ModuleList(), nn.ModuleList()
            for _ in range(cfg.blocks[i] + 1):
                rs.append(res(cur + skip_ch.pop(), ch[i]))
                cur = ch[i]
                if cfg.attention[i]:
                    ats.append(attn(ch[i]))
            self.up_res.append(rs)
            self.up_attn.append(ats)
            if i > 0:
                self.upsample.append(Upsample(cfg.dims, cur, cfg.factors[i - 1], cfg.resample, k))
        assert not skip_ch, "internal: skip connections left over"
        self.norm_out = GroupNorm32(g, cur)
        self.conv_out = zero_module(conv_nd(cfg.dims, cur, cfg.out_channels * fold, k, padding=k // 2))

    # ------------------------------------------------------------------ conditioning
    def _context(
        self, cond, batch: int, x: Tensor
    ) -> tuple[Tensor | None, CrossContext | None, Tensor | None]:
        """Validate ``cond`` and return ``(concat, cross context, pooled)`` with null rows substituted."""
        cfg = self.config
        if cond is not None and cond.batch_size is not None and cond.batch_size != batch:
            raise ValueError(f"cond has batch size {cond.batch_size} but x has {batch}")
        get = (lambda name: None) if cond is None else (lambda name: getattr(cond, name))
        null = get("null")
        eager = not torch.compiler.is_compiling()

        concat = get("concat")
        if cfg.concat_channels == 0 and concat is not None:
            raise ValueError(
                f"cond.concat {tuple(concat.shape)} was given but this network has concat_channels=0; "
                "build it with concat_channels=C to use channel concatenation"
            )
        if cfg.concat_channels > 0:
            want = (batch, cfg.concat_channels, *x.shape[2:])
            if concat is None:
                raise ValueError(
                    f"this network needs cond.concat of shape {want} (concat_channels>0); got none"
                )
            if tuple(concat.shape) != want:
                raise ValueError(
                    f"cond.concat must have shape {want} (same spatial size as x), got {tuple(concat.shape)}"
                )

        def missing(route: str, dim: int) -> None:
            if null is None or (eager and not bool(null.all())):
                raise ValueError(
                    f"this network expects cond.{route} [B, ..., {dim}] ({route[:-1] if route == 'tokens' else route}"
                    f" route on); got none. Pass it, or mark every row null for the unconditional model "
                    f"(Cond(null=torch.ones(B, dtype=torch.bool)))"
                )

        ctx = None
        tokens, mask = get("tokens"), get("mask")
        if cfg.token_dim == 0 and tokens is not None:
            raise ValueError(
                f"cond.tokens {tuple(tokens.shape)} given but this network has token_dim=0 (no cross-attention)"
            )
        if cfg.token_dim > 0:
            if tokens is None:
                missing("tokens", cfg.token_dim)
                ctx = (self.null_token.expand(batch, 1, cfg.token_dim), None, None)
            else:
                if tokens.shape[-1] != cfg.token_dim:
                    raise ValueError(
                        f"cond.tokens must be [B, L, {cfg.token_dim}], got {tuple(tokens.shape)}"
                    )
                if null is not None:
                    tokens = torch.where(null[:, None, None], self.null_token.to(tokens.dtype), tokens)
                    if mask is not None:
                        mask = mask | null[:, None]
                keep = attn_mask = None
                if mask is not None:
                    any_real = mask.any(dim=1)  # [B]
                    attn_mask = (mask | ~any_real[:, None])[
                        :, None, None, :
                    ]  # empty rows attend anywhere ...
                    keep = any_real.float()[:, None, None]  # ... and their output is zeroed
                ctx = (tokens, attn_mask, keep)

        pooled = get("pooled")
        if cfg.pooled_dim == 0 and pooled is not None:
            raise ValueError(f"cond.pooled {tuple(pooled.shape)} given but this network has pooled_dim=0")
        if cfg.pooled_dim > 0:
            if pooled is None:
                missing("pooled", cfg.pooled_dim)
                pooled = self.null_pooled.expand(batch, cfg.pooled_dim)
            else:
                if pooled.shape[-1] != cfg.pooled_dim:
                    raise ValueError(f"cond.pooled must be [B, {cfg.pooled_dim}], got {tuple(pooled.shape)}")
                if null is not None:
                    pooled = torch.where(null[:, None], self.null_pooled.to(pooled.dtype), pooled)
        return concat, ctx, pooled

    # ------------------------------------------------------------------ forward
    def _run(self, block: nn.Module, *args):
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def forward(self, x: Tensor, c_noise: Tensor, cond=None) -> Tensor:
        cfg = self.config
        if x.ndim != cfg.dims + 2 or x.shape[1] != cfg.in_channels:
            want = "[B, C, T]" if cfg.dims == 1 else "[B, C, H, W]"
            raise ValueError(
                f"x must be {want} with C={cfg.in_channels} (dims={cfg.dims}), got {tuple(x.shape)}"
            )
        batch, size = x.shape[0], tuple(x.shape[2:])
        if c_noise.shape != (batch,):
            raise ValueError(f"c_noise must be a [B] = [{batch}] tensor, got shape {tuple(c_noise.shape)}")
        concat, ctx, pooled = self._context(cond, batch, x)

        h = x if concat is None else torch.cat([x, concat.to(x.dtype)], dim=1)
        tf = cfg.total_factor
        pads = [(-s) % tf for s in size]
        if any(pads):
            h = F.pad(h, [p for pad in reversed(pads) for p in (0, pad)])
        shapes = [tuple((s + p) // cfg.patch for s, p in zip(size, pads))]
        for f in cfg.factors:
            shapes.append(tuple(s // f for s in shapes[-1]))
        ropes = [None] * len(shapes)
        if cfg.positions == "rope":
            for i, s in enumerate(shapes):
                if cfg.attention[i] or (cfg.mid_attention and i == len(shapes) - 1):
                    ropes[i] = rope_tables(s, cfg.head_dim, x.device)

        emb = F.silu(self.noise_embed(c_noise, pooled))
        if cfg.patch > 1:
            h = space_to_depth(h, cfg.patch)
        h = self.conv_in(h)
        skips = [h]
        last = len(cfg.channels) - 1
        for i in range(last + 1):
            for j, block in enumerate(self.down_res[i]):
                h = self._run(block, h, emb)
                if cfg.attention[i]:
                    h = self._run(self.down_attn[i][j], h, ropes[i], ctx)
                skips.append(h)
            if i < last:
                h = self.downsample[i](h)
                skips.append(h)
        h = self._run(self.mid_res1, h, emb)
        if self.mid_attn is not None:
            h = self._run(self.mid_attn, h, ropes[last], ctx)
        h = self._run(self.mid_res2, h, emb)
        for n, i in enumerate(reversed(range(last + 1))):
            for j, block in enumerate(self.up_res[n]):
                h = self._run(block, torch.cat([h, skips.pop()], dim=1), emb)
                if cfg.attention[i]:
                    h = self._run(self.up_attn[n][j], h, ropes[i], ctx)
            if i > 0:
                h = self.upsample[n](h)
        h = self.conv_out(F.silu(self.norm_out(h)))
        if cfg.patch > 1:
            h = depth_to_space(h, cfg.patch)
        if any(pads):
            h = h[(..., *[slice(0, s) for s in size])]
        return h.to(x.dtype)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())




# einops patterns of space_to_depth / depth_to_space per number of spatial axes (channel order of pixel_unshuffle)
_FOLD = {1: ("b c (t p) -> b (c p) t", "b (c p) t -> b c (t p)"),
         2: ("b c (h p) (w q) -> b (c p q) h w", "b (c p q) h w -> b c (h p) (w q)")}


def space_to_depth(x: Tensor, p: int) -> Tensor:
    """``[B, C, *S]`` -> ``[B, C * p ** d, *(S / p)]`` (d = 1 or 2): each non-overlapping ``p``-patch becomes
    channels, in ``F.pixel_unshuffle``'s order; every spatial size must be a multiple of ``p``."""
    return rearrange(x, _FOLD[x.ndim - 2][0], p=p, **({"q": p} if x.ndim == 4 else {}))


def depth_to_space(x: Tensor, p: int) -> Tensor:
    """Inverse of :func:`space_to_depth`."""
    return rearrange(x, _FOLD[x.ndim - 2][1], p=p, **({"q": p} if x.ndim == 4 else {}))
