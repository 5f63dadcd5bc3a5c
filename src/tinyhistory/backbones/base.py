"""The backbone seam: context tokens with explicit positions, and what a DiT adapter must offer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass
class ContextTokens:
    """Tokens that enter the DiT beside the target tokens, already at the DiT's hidden width.

    ``tokens``: ``(B, K, D)``; ``positions``: ``(B, K, 3)`` as (t, h, w) in DiT-token units (fractional allowed).
    Context tokens are clean history: they are modulated with timestep 0 and their outputs are dropped.
    """

    tokens: torch.Tensor
    positions: torch.Tensor
    # Optional ``(B, K', F)`` encoder features for the cross-attention enhancement (SPEC §3.4); not DiT tokens.
    features: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.tokens.ndim != 3 or self.positions.ndim != 3 or self.positions.shape[-1] != 3:
            raise ValueError(
                f"context tokens must be (B, K, D) with positions (B, K, 3); got {tuple(self.tokens.shape)} and "
                f"{tuple(self.positions.shape)}"
            )
        if self.tokens.shape[:2] != self.positions.shape[:2]:
            raise ValueError(
                f"context tokens {tuple(self.tokens.shape)} and positions {tuple(self.positions.shape)} "
                "disagree on (B, K)"
            )

    @property
    def num_tokens(self) -> int:
        return self.tokens.shape[1]

    @staticmethod
    def concat(parts: list[ContextTokens]) -> ContextTokens:
        """Concatenate along the token axis (several encoders, or a sliding window beside an encoder)."""
        features = [p.features for p in parts if p.features is not None]
        return ContextTokens(
            torch.cat([p.tokens for p in parts], 1),
            torch.cat([p.positions for p in parts], 1),
            torch.cat(features, 1) if features else None,
        )

    def narrow(self, start: int) -> ContextTokens:
        """Tokens (and features, which come one per token) from index ``start`` on."""
        features = self.features[:, start:] if self.features is not None else None
        return ContextTokens(self.tokens[:, start:], self.positions[:, start:], features)


class Backbone(Protocol):
    """A DiT family adapter around a stock diffusers transformer."""

    hidden_dim: int
    patch_size: tuple[int, int, int]

    def patch_embed(self, latents: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` latents → ``(B, D, T/pt, H/ph, W/pw)`` token grid (the DiT's first layer)."""
        ...

    def __call__(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        text: torch.Tensor,
        context: ContextTokens | None = None,
        frame_positions: torch.Tensor | None = None,
    ) -> torch.Tensor: ...


def grid_positions(
    frame_positions: torch.Tensor, height: int, width: int, scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
) -> torch.Tensor:
    """(t, h, w) positions of a token grid, flattened in (frame, row, column) order.

    ``frame_positions``: ``(B, T)`` temporal position of each grid frame. Rows and columns count from 0; with
    ``scale`` ≠ 1 each grid cell is a block of ``scale`` DiT tokens and gets its block's centre
    ``(i·s + (s − 1)/2)``. Returns ``(B, T·H·W, 3)`` float64.
    """
    b, t = frame_positions.shape
    _, sh, sw = scale
    rows = torch.arange(height, dtype=torch.float64, device=frame_positions.device) * sh + (sh - 1) / 2
    cols = torch.arange(width, dtype=torch.float64, device=frame_positions.device) * sw + (sw - 1) / 2
    pos = torch.empty(b, t, height, width, 3, dtype=torch.float64, device=frame_positions.device)
    pos[..., 0] = frame_positions.to(torch.float64)[:, :, None, None]
    pos[..., 1] = rows[None, None, :, None]
    pos[..., 2] = cols[None, None, None, :]
    return pos.reshape(b, t * height * width, 3)
