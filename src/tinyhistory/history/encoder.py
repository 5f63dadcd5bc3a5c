"""The history encoder: an LR branch through the DiT's own patch embedding plus a convolutional HR branch.

SPEC §3 and §9. For a rate ``rH×rW×rT`` (relative to the DiT token grid) and a DiT patch ``p``:

* **LR branch**: pixel video downsampled by the rate → base codec → the DiT's own ``patch_embedding`` →
  a ``(B, D, T/rT, H_lat/(p·rH), W_lat/(p·rW))`` grid already in the DiT's hidden space;
* **HR branch** on the full-resolution latent: a causal-in-time stem conv + SiLU, then stride-2 convs (time first,
  then space) ramping the channels (64→128→256→512 by default), attention blocks at the last width (spatial,
  per compressed frame, so the branch stays causal), and a zero-initialised 1×1×1 projection to the DiT width;
* the two grids are summed (the HR grid is cropped to the LR floor grid).

Variants: ``proposed`` (LR + HR), ``only_lr``, ``without_lr``.

Causality makes incremental encoding exact: new latent frames, together with ``receptive_field`` earlier frames,
give the same tokens as a full re-encode (see :mod:`tinyhistory.history.streaming`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tinyhistory.backbones.base import ContextTokens
from tinyhistory.geometry import Rate
from tinyhistory.history.base import tokens_from_grid
from tinyhistory.history.phase import BlockPhase, PhaseReadout

VARIANTS = ("proposed", "only_lr", "without_lr")


@dataclass
class EncoderConfig:
    """Hyper-parameters of one history encoder (SPEC §9 defaults)."""

    rate: str = "4x4x2"
    variant: str = "proposed"
    channels: tuple[int, ...] = (64, 128, 256, 512)
    attention_blocks: int = 1
    attention_heads: int = 8
    # The one conv at full latent resolution that mixes time (causal); later convs keep to one axis each.
    stem_kernel: tuple[int, int, int] = (3, 3, 3)

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"encoder variant {self.variant!r} is not one of {VARIANTS}")
        Rate.parse(self.rate)
        self.channels = tuple(int(c) for c in self.channels)
        self.stem_kernel = tuple(int(k) for k in self.stem_kernel)
        if len(self.channels) < 1 or any(c <= 0 for c in self.channels):
            raise ValueError(f"encoder channels must be positive integers, got {self.channels}")
        if self.channels[-1] % self.attention_heads:
            raise ValueError(
                f"attention width {self.channels[-1]} is not divisible by attention_heads={self.attention_heads}"
            )


class CausalConv3d(nn.Conv3d):
    """Conv3d padded on the left in time (causal) and symmetrically in space.

    With stride ``s`` in time, an output frame depends on input frames up to the end of its own block, so a
    history cut at block boundaries encodes the same in pieces as in one go.
    """

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int, int], stride: tuple[int, int, int] = (1, 1, 1)):
        super().__init__(cin, cout, kernel, stride=stride, padding=0)
        kt, kh, kw = kernel
        self.time_pad = kt - stride[0]
        self.space_pad = (kh // 2, kw // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ph, pw = self.space_pad
        x = F.pad(x, (pw, pw, ph, ph, self.time_pad, 0))
        return super().forward(x)


class SpatialAttentionBlock(nn.Module):
    """Pre-norm self-attention + MLP over the tokens of each compressed frame (no mixing across time)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(approximate="tanh"), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        seq = x.permute(0, 2, 3, 4, 1).reshape(b * t, h * w, c)  # (B·T, H·W, C)
        q, k, v = self.qkv(self.norm1(seq)).reshape(b * t, h * w, 3, self.heads, c // self.heads).unbind(2)
        attn = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        seq = seq + self.out(attn.transpose(1, 2).reshape(b * t, h * w, c))
        seq = seq + self.mlp(self.norm2(seq))
        return seq.reshape(b, t, h, w, c).permute(0, 4, 1, 2, 3)


class HighResBranch(nn.Module):
    """Full-resolution latent ``(B, C, T, H, W)`` → ``(B, D, T/rT, ⌈H/(p·rH)⌉, ⌈W/(p·rW)⌉)`` residual grid."""

    def __init__(self, latent_channels: int, hidden_dim: int, rate: Rate, patch: int, cfg: EncoderConfig):
        super().__init__()
        ch = cfg.channels
        layers: list[nn.Module] = [CausalConv3d(latent_channels, ch[0], cfg.stem_kernel), nn.SiLU()]
        # Temporal downsampling first (SPEC §3.3), then spatial; kernels stay in their own axis to keep it light.
        strides = [(2, 1, 1)] * int(math.log2(rate.t))
        n_h, n_w = int(math.log2(patch * rate.h)), int(math.log2(patch * rate.w))
        strides += [(1, 2 if i < n_h else 1, 2 if i < n_w else 1) for i in range(max(n_h, n_w))]
        cin = ch[0]
        for i, stride in enumerate(strides):
            cout = ch[min(i + 1, len(ch) - 1)]
            kernel = (3, 1, 1) if stride[0] == 2 else (1, 3 if stride[1] == 2 else 1, 3 if stride[2] == 2 else 1)
            layers += [CausalConv3d(cin, cout, kernel, stride), nn.SiLU()]
            cin = cout
        if cin != ch[-1]:
            layers += [nn.Conv3d(cin, ch[-1], 1), nn.SiLU()]
        self.convs = nn.Sequential(*layers)
        self.attention = nn.ModuleList(
            SpatialAttentionBlock(ch[-1], cfg.attention_heads) for _ in range(cfg.attention_blocks)
        )
        self.proj = nn.Conv3d(ch[-1], hidden_dim, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        self.receptive_field = self._temporal_lookback()

    def _temporal_lookback(self) -> int:
        """How many latent frames before a block's first frame can influence that block's output."""
        lookback, stride = 0, 1
        for layer in self.convs:
            if isinstance(layer, CausalConv3d):
                lookback += layer.time_pad * stride
                stride *= layer.stride[0]
        return lookback

    def features(self, latents: torch.Tensor) -> torch.Tensor:
        """The penultimate 512-channel features (before the 1×1×1 projection)."""
        x = self.convs(latents)
        for block in self.attention:
            x = block(x)
        return x

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.proj(self.features(latents))


class HistoryEncoder(nn.Module):
    """ϕ(H): history latents (and their low-resolution version) → context tokens at the DiT width.

    ``patch_embed`` is the backbone's own first layer (shared with the DiT, trained or frozen with it); it is passed
    in as a callable so that the encoder owns no copy of it and its weights never live in two files.
    """

    def __init__(self, cfg: EncoderConfig, latent_channels: int, hidden_dim: int, patch: int):
        super().__init__()
        self.cfg = cfg
        self.rate = Rate.parse(cfg.rate)
        self.patch = patch
        self.uses_lr = cfg.variant in ("proposed", "only_lr")
        self.block_phase: BlockPhase | None = None  # history.block_phase: set by assemble.build_producers
        self.phase_readout: PhaseReadout | None = None  # history.phase_readout: set by build_producers
        self.source = 0  # its index in HistoryDiT.producers (ContextTokens.sources): set by build_producers
        self.hr = (
            HighResBranch(latent_channels, hidden_dim, self.rate, patch, cfg) if cfg.variant != "only_lr" else None
        )

    @classmethod
    def from_config(cls, method: str, rate: str, history, backbone) -> HistoryEncoder:
        """Registry factory for ``history.method`` in proposed / only_lr / without_lr, at the backbone's width."""
        cfg = EncoderConfig(
            rate=rate,
            variant=method,
            channels=tuple(history.channels),
            attention_blocks=history.attention_blocks,
            attention_heads=history.attention_heads,
        )
        return cls(cfg, backbone.in_channels, backbone.hidden_dim, backbone.patch_size[1])

    @property
    def receptive_field(self) -> int:
        """Latent frames of earlier history needed to encode a new chunk exactly (0 for the LR branch alone)."""
        return self.hr.receptive_field if self.hr is not None else 0

    def grid_shape(self, latent_shape: tuple[int, ...]) -> tuple[int, int, int]:
        """(T, H, W) history grid for HR latents of shape ``(..., T, H, W)`` (floor, SPEC §9)."""
        t, h, w = latent_shape[-3:]
        return t // self.rate.t, h // (self.patch * self.rate.h), w // (self.patch * self.rate.w)

    def forward(
        self,
        hr_latents: torch.Tensor,
        lr_latents: torch.Tensor | None,
        patch_embed,
        frame_offset: int = 0,
        return_features: bool = False,
    ) -> ContextTokens:
        """hr_latents ``(B, C, T, H, W)``; lr_latents ``(B, C, T/rT, H/rH, W/rW)``; → ``(B, K, D)`` tokens.

        ``return_features``: also return the HR branch's penultimate features, one per token (cross-attention).
        """
        gt, gh, gw = self.grid_shape(hr_latents.shape)
        grid = features = None
        if self.uses_lr:
            if lr_latents is None:
                raise ValueError(f"encoder variant {self.cfg.variant!r} needs low-resolution latents (lr_latents)")
            grid = patch_embed(lr_latents)[:, :, :gt, :gh, :gw]
        if self.hr is not None:
            features = self.hr.features(hr_latents)[:, :, :gt, :gh, :gw]
            residual = self.hr.proj(features)
            grid = residual if grid is None else grid + residual
        return tokens_from_grid(grid, self.rate, frame_offset, features if return_features else None, self.source)
