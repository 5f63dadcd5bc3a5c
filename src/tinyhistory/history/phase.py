"""Block phase (``history.block_phase``, issue 22): tell each target token where it sits inside a history block.

Wan's DiT is translation-equivariant: the patch embedding has stride = kernel, the FFN is per token and RoPE tilts
queries and keys only, never values. A history token at rate ``rH×rW×rT`` stands for a block of ``rT·rH·rW`` target
tokens, and every target token of that block receives the same value vector from it; nothing in a target token says
*which* cell of the block it is, so it cannot pick its own part out of the history token except indirectly, through
how RoPE tilts its attention between neighbouring blocks — which a small base under a LoRA learns slowly
(``docs/results/miniature_demo/search/``).

The block phase makes that information explicit: a learned table of ``rT·rH·rW`` vectors at the DiT's width, added to
each target token after the patch embedding according to its position modulo the block,
``(t mod rT, h mod rH, w mod rW)`` in DiT-token units (the history's blocks start at its frame offset). It is
zero-initialised, so a fresh table leaves the DiT exactly as it was; it trains with the history encoder (its own
learning rate, ``train.block_phase_learning_rate``: at the encoder's rate a zero table hardly moves) and is saved in
the encoder's file. It costs one addition per target token at inference. Several rates: one table per rate, summed.
"""

from __future__ import annotations

import torch
from torch import nn

from tinyhistory.geometry import Rate


class BlockPhase(nn.Module):
    """A ``(rT, rH, rW, D)`` table of offsets for the target tokens, indexed by their position inside a block."""

    def __init__(self, rate: Rate, dim: int):
        super().__init__()
        self.rate = rate
        self.table = nn.Parameter(torch.zeros(rate.t, rate.h, rate.w, dim))

    def forward(self, frame_positions: torch.Tensor, grid_h: int, grid_w: int, frame_offset: int = 0) -> torch.Tensor:
        """frame_positions ``(B, T)`` (DiT frames of the targets) → ``(B, T·grid_h·grid_w, D)`` offsets, in the
        targets' (frame, row, column) token order."""
        device = self.table.device
        phase_t = torch.remainder(frame_positions.to(device=device, dtype=torch.long) - frame_offset, self.rate.t)
        phase_h = torch.arange(grid_h, device=device) % self.rate.h
        phase_w = torch.arange(grid_w, device=device) % self.rate.w
        offsets = self.table[phase_t[:, :, None, None], phase_h[None, None, :, None], phase_w[None, None, None, :]]
        return offsets.flatten(1, 3)  # (B, T, H, W, D) → (B, N, D)
