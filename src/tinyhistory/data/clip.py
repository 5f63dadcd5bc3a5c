"""A decoded clip in memory, split in time into a training part and a held-out part, and window sampling.

The held-out part is the *last* ``heldout_fraction`` of the clip and is never sampled for training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tinyhistory.data.video import decode_video
from tinyhistory.geometry import Rate
from tinyhistory.history import lowres_latents


def to_pixels(frames: np.ndarray) -> torch.Tensor:
    """``(T, H, W, 3)`` uint8 → ``(3, T, H, W)`` float in [-1, 1]."""
    return torch.from_numpy(frames).permute(3, 0, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """``(3, T, H, W)`` in [-1, 1] → ``(T, H, W, 3)`` uint8."""
    return pixels.clamp(-1, 1).add(1).mul(127.5).round().byte().permute(1, 2, 3, 0).cpu().numpy()


@dataclass
class ClipSplit:
    train: torch.Tensor  # (3, T_train, H, W) pixels in [-1, 1]
    heldout: torch.Tensor  # (3, T_heldout, H, W)
    fps: float


def load_clip(path: str | Path, fps: float, size: int, heldout_fraction: float) -> ClipSplit:
    pixels = to_pixels(decode_video(path, fps=fps, size=size))
    total = pixels.shape[1]
    cut = int(round(total * (1.0 - heldout_fraction)))
    return ClipSplit(train=pixels[:, :cut], heldout=pixels[:, cut:], fps=fps)


def resolve_video(path: str | Path) -> Path:
    """A relative ``data.video`` is looked up in the working directory, then in the project checkout."""
    p = Path(path)
    if p.is_file() or p.is_absolute():
        return p
    project = Path(__file__).resolve().parents[3] / p
    return project if project.is_file() else p


class WindowSampler:
    """Random history windows ``(B, 3, T, H, W)`` from a pixel clip, with their HR and LR latents."""

    def __init__(self, pixels: torch.Tensor, frames: int, codec, rates: list[Rate], uses_lr: list[bool]):
        if pixels.shape[1] < frames:
            raise ValueError(f"clip has {pixels.shape[1]} frames, fewer than the window of {frames} frames")
        self.pixels = pixels
        self.frames = frames
        self.codec = codec
        self.rates = rates
        self.uses_lr = uses_lr

    def window(self, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor | None]]:
        """Pixels, HR latents and per-producer LR latents for windows starting at ``starts`` ``(B,)``."""
        px = torch.stack([self.pixels[:, s : s + self.frames] for s in starts.tolist()])
        hr = self.codec.encode(px)
        lr = [
            lowres_latents(px, r, self.codec) if use else None for r, use in zip(self.rates, self.uses_lr, strict=True)
        ]
        return px, hr, lr

    def sample(self, batch: int, generator: torch.Generator | None = None):
        starts = torch.randint(0, self.pixels.shape[1] - self.frames + 1, (batch,), generator=generator)
        return self.window(starts)

    def fixed_starts(self, count: int) -> torch.Tensor:
        """``count`` evenly spaced window starts (for deterministic evaluation)."""
        last = self.pixels.shape[1] - self.frames
        return torch.linspace(0, last, count).round().long()
