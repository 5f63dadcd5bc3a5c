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


def block_phases(
    rate: Rate, frame_positions: torch.Tensor, grid_h: int, grid_w: int, frame_offset: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where each target token sits inside a history block, ``(t mod rT, h mod rH, w mod rW)`` in DiT-token units
    (the history's blocks start at ``frame_offset``), as three index tensors that broadcast to ``(B, T, H, W)``:
    ``(B, T, 1, 1)``, ``(1, 1, H, 1)``, ``(1, 1, 1, W)``. frame_positions: ``(B, T)`` DiT frames of the targets."""
    phase_t = torch.remainder(frame_positions.to(device=device, dtype=torch.long) - frame_offset, rate.t)
    phase_h = torch.arange(grid_h, device=device) % rate.h
    phase_w = torch.arange(grid_w, device=device) % rate.w
    return phase_t[:, :, None, None], phase_h[None, None, :, None], phase_w[None, None, None, :]


class BlockPhase(nn.Module):
    """A ``(rT, rH, rW, D)`` table of offsets for the target tokens, indexed by their position inside a block."""

    def __init__(self, rate: Rate, dim: int):
        super().__init__()
        self.rate = rate
        self.table = nn.Parameter(torch.zeros(rate.t, rate.h, rate.w, dim))

    def forward(self, frame_positions: torch.Tensor, grid_h: int, grid_w: int, frame_offset: int = 0) -> torch.Tensor:
        """frame_positions ``(B, T)`` (DiT frames of the targets) → ``(B, T·grid_h·grid_w, D)`` offsets, in the
        targets' (frame, row, column) token order."""
        phase_t, phase_h, phase_w = block_phases(
            self.rate, frame_positions, grid_h, grid_w, frame_offset, self.table.device
        )
        offsets = self.table[phase_t, phase_h, phase_w]
        return offsets.flatten(1, 3)  # (B, T, H, W, D) → (B, N, D)


class PhaseReadout(nn.Module):
    """A phase-conditioned linear readout of the history (``history.phase_readout``, issue 22): per DiT block and per
    cell of a history block, a low-rank map added to what a target token reads from the context.

    Why: with the block phase a target token knows *which* cell of a history token is its own, but the value it
    receives is still the same for every cell, so turning "this token's content and my cell" into "my part of the
    content" is a product of the two that the per-token FFN must approximate. The Large Patchifier's linear packing
    (and the LR branch's downsampling) are linear, so their inverse is one linear map per cell: an "unpatchify". Here
    the context part of each target's attention output ``c`` (before the output projection; the target part is
    untouched, so the base's own attention among targets stays the stock one) becomes ``c + U_p V_p c`` for the
    target's cell ``p``, ``V_p`` ``(D, r)`` random, ``U_p`` ``(r, D)`` zero-initialised: a fresh readout leaves the
    DiT exactly as it was, like a LoRA. Cells are ``(t mod rT, h mod rH, w mod rW)`` in DiT-token units, as for the
    block phase. Parameters: ``2 · layers · rT·rH·rW · D · r``; saved with the encoder, trained in its group.
    """

    def __init__(self, rate: Rate, dim: int, layers: int, rank: int):
        super().__init__()
        self.rate = rate
        cells = rate.t * rate.h * rate.w
        self.down = nn.Parameter(torch.randn(layers, cells, dim, rank) / dim**0.5)  # (L, P, D, r)
        self.up = nn.Parameter(torch.zeros(layers, cells, rank, dim))  # (L, P, r, D)

    def cells(self, frame_positions: torch.Tensor, grid_h: int, grid_w: int, frame_offset: int = 0) -> torch.Tensor:
        """frame_positions ``(B, T)`` → ``(B, T·grid_h·grid_w)`` cell index of each target token (row-major
        ``(t, h, w)`` inside the block), in the targets' (frame, row, column) token order."""
        phase_t, phase_h, phase_w = block_phases(
            self.rate, frame_positions, grid_h, grid_w, frame_offset, self.up.device
        )
        cell = (phase_t * self.rate.h + phase_h) * self.rate.w + phase_w  # (B, T, H, W)
        return cell.flatten(1, 3)  # (B, T, H, W) → (B, N)

    def delta(self, layer: int, read: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """``U_p V_p c`` for block ``layer``: read ``(B, N, D)`` (the context part of the targets' attention output),
        cells ``(B, N)`` → ``(B, N, D)``. Every cell's rank-r projection is computed, the others' zeroed, then one
        matmul maps the ``P·r`` features up, so no ``(B, N, D, r)`` gather is ever made."""
        down, up = self.down[layer].to(read.dtype), self.up[layer].to(read.dtype)
        cells_count, _, rank = down.shape
        low = torch.einsum("bnd,pdr->bnpr", read, down)  # (B, N, P, r)
        own = nn.functional.one_hot(cells, cells_count).to(read.dtype)[..., None]  # (B, N, P, 1)
        return (low * own).flatten(2) @ up.reshape(cells_count * rank, -1)  # (B, N, P·r) @ (P·r, D) → (B, N, D)
