"""The Large Patchifier baseline (FramePack-equivalent, DESIGN.md).

One Conv3d with kernel = stride = ``(rT, p·rH, p·rW)`` on the full-resolution latent, initialised from the DiT's
patch embedding by repeating its kernel over the larger window and dividing by the repeat volume (so at start it
embeds the block's average patch). Same token grid and block-centre positions as the history encoder.
"""

from __future__ import annotations

import torch
from torch import nn

from tinyhistory.backbones.base import ContextTokens
from tinyhistory.geometry import Rate
from tinyhistory.history.base import tokens_from_grid
from tinyhistory.history.phase import BlockPhase, PhaseReadout


class LargePatchifier(nn.Module):
    uses_lr = False
    receptive_field = 0

    def __init__(self, rate: str, patch_embedding: nn.Conv3d):
        super().__init__()
        self.rate = Rate.parse(rate)
        self.block_phase: BlockPhase | None = None  # history.block_phase: set by assemble.build_producers
        self.phase_readout: PhaseReadout | None = None  # history.phase_readout: set by build_producers
        self.source = 0  # its index in HistoryDiT.producers (ContextTokens.sources): set by build_producers
        pt, ph, pw = patch_embedding.kernel_size
        kernel = (pt * self.rate.t, ph * self.rate.h, pw * self.rate.w)
        self.conv = nn.Conv3d(patch_embedding.in_channels, patch_embedding.out_channels, kernel, stride=kernel)
        with torch.no_grad():
            repeat = (1, 1, self.rate.t, self.rate.h, self.rate.w)
            self.conv.weight.copy_(patch_embedding.weight.repeat(*repeat) / self.rate.volume)
            self.conv.bias.copy_(patch_embedding.bias)

    @classmethod
    def from_config(cls, method: str, rate: str, history, backbone) -> LargePatchifier:
        """Registry factory (``history.method = "large_patchifier"``), initialised from the backbone's patch embed."""
        return cls(rate, backbone.patch_embedding)

    def forward(
        self,
        hr_latents: torch.Tensor,
        lr_latents=None,
        patch_embed=None,
        frame_offset: int = 0,
        return_features: bool = False,
    ) -> ContextTokens:
        return tokens_from_grid(self.conv(hr_latents), self.rate, frame_offset, source=self.source)
