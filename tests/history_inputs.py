"""What the history-attention tests share: a tiny preset's history and targets, and random values for the layers that
start at zero (a fresh encoder projection, enhancer output or readout would hide what a test checks)."""

from __future__ import annotations

import torch

from tinyhistory.assemble import HistoryDiT
from tinyhistory.text.condition import TextCondition


def tiny_history_inputs(seed: int = 0, frame_positions=(5, 6)):
    """A tiny preset's history (8 latent frames, 48 channels, 16×16), its 4×4×2 LR input and noisy target frames at
    ``frame_positions``: ``(hr, lr, x, t, text, positions)``."""
    g = torch.Generator().manual_seed(seed)
    hr, lr = torch.randn(1, 48, 8, 16, 16, generator=g), [torch.randn(1, 48, 4, 4, 4, generator=g)]
    x = torch.randn(1, 48, len(frame_positions), 16, 16, generator=g)
    text = TextCondition(torch.randn(1, 64, 384, generator=g))
    return hr, lr, x, torch.tensor([0.6]), text, torch.tensor([list(frame_positions)])


def randomise_zero_layers(model: HistoryDiT, scale: float = 0.05) -> None:
    """Every all-zero parameter of the producers and enhancers drawn from N(0, scale²), the same draws every call."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in [*model.producers.parameters(), *model.enhancers.parameters()]:
            if p.abs().sum() == 0:
                p.copy_(torch.randn(p.shape, generator=g) * scale)
