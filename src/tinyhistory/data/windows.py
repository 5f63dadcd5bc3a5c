"""A decoded clip in memory, split in time into a training part and a held-out part, and window sampling.

The held-out part is the *last* ``heldout_fraction`` of the clip and is never sampled for training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tinyhistory.config import DataConfig
from tinyhistory.data.video import decode_video
from tinyhistory.geometry import Rate
from tinyhistory.history.base import lowres_latents_per_rate
from tinyhistory.paths import resolve_path


def to_pixels(frames: np.ndarray) -> torch.Tensor:
    """``(T, H, W, 3)`` uint8 → ``(3, T, H, W)`` float in [-1, 1]."""
    return torch.from_numpy(frames).permute(3, 0, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """``(3, T, H, W)`` in [-1, 1] → ``(T, H, W, 3)`` uint8."""
    return pixels.clamp(-1, 1).add(1).mul(127.5).round().byte().permute(1, 2, 3, 0).cpu().numpy()


def batch_to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """``(B, 3, k, H, W)`` in [-1, 1] → ``(B·k, H, W, 3)`` uint8: every window's frames, one after another."""
    return np.concatenate([to_uint8(p) for p in pixels])


@dataclass
class ClipSplit:
    train: torch.Tensor  # (3, T_train, H, W) pixels in [-1, 1]
    heldout: torch.Tensor  # (3, T_heldout, H, W)
    fps: float


def load_clip(path: str | Path, fps: float, size: int, heldout_fraction: float) -> ClipSplit:
    """``path`` decoded at ``fps`` and ``size``, split in time. The last clip decoded is kept (as uint8 frames,
    a quarter of the split's size) for as long as its file is unchanged: the demo, its evaluations and a run of
    trainings in one process read the same clip many times, and an 8-minute clip takes seconds to decode."""
    pixels = to_pixels(_decoded(Path(path), fps, size))
    total = pixels.shape[1]
    cut = int(round(total * (1.0 - heldout_fraction)))
    return ClipSplit(train=pixels[:, :cut], heldout=pixels[:, cut:], fps=fps)


_last_decoded: tuple[tuple, np.ndarray] | None = None  # ((path, mtime, bytes, fps, size), frames)


def _decoded(path: Path, fps: float, size: int) -> np.ndarray:
    """:func:`decode_video` of ``path``, or the frames of the last call when the same unchanged file was asked for
    at the same fps and size (never handed out: callers get :func:`to_pixels`' copy)."""
    global _last_decoded
    stat = path.stat() if path.is_file() else None  # (a missing file: decode_video says so by name)
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, fps, size) if stat else None
    if key is None or _last_decoded is None or _last_decoded[0] != key:
        frames = decode_video(path, fps=fps, size=size)
        _last_decoded = (key, frames) if key is not None else None
        return frames
    return _last_decoded[1]


def load_extra_training(paths: list[str], fps: float, size: int) -> list[torch.Tensor]:
    """Whole videos used for training only (``data.extra_train_videos``); none of their frames are held out."""
    return [to_pixels(decode_video(resolve_path(p), fps=fps, size=size)) for p in paths]


def clip_from_config(data: DataConfig) -> ClipSplit:
    """The run's ``data.video`` (found by :func:`~tinyhistory.paths.resolve_path`), decoded and split."""
    return load_clip(resolve_path(data.video), data.fps, data.size, data.heldout_fraction)


class WindowSampler:
    """Random history windows ``(B, 3, T, H, W)`` from one or several pixel clips, with their HR and LR latents.

    Several clips are concatenated in time; windows never cross from one clip into the next. Starts are drawn
    uniformly over all valid windows (so a longer clip is sampled more often).
    """

    def __init__(
        self, pixels: torch.Tensor | list[torch.Tensor], frames: int, codec, rates: list[Rate], uses_lr: list[bool]
    ):
        clips = [pixels] if isinstance(pixels, torch.Tensor) else list(pixels)
        starts, offset = [], 0
        for clip in clips:
            if clip.shape[1] >= frames:
                starts.append(torch.arange(offset, offset + clip.shape[1] - frames + 1))
            offset += clip.shape[1]
        if not starts:
            longest = max(c.shape[1] for c in clips)
            raise ValueError(f"clip has {longest} frames, fewer than the window of {frames} frames")
        self.pixels = torch.cat(clips, dim=1) if len(clips) > 1 else clips[0]
        self.valid_starts = torch.cat(starts)  # (N,) first frames of windows inside a single clip
        self.frames = frames
        self.codec = codec
        self.rates = rates
        self.uses_lr = uses_lr

    def window(self, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor | None]]:
        """Pixels, HR latents and per-producer LR latents for windows starting at ``starts`` ``(B,)``."""
        px = torch.stack([self.pixels[:, s : s + self.frames] for s in starts.tolist()])
        hr = self.codec.encode(px)
        return px, hr, lowres_latents_per_rate(px, self.rates, self.uses_lr, self.codec)

    def pick(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``batch`` window starts ``(B,)`` drawn uniformly over all valid windows."""
        index = torch.randint(0, len(self.valid_starts), (batch,), generator=generator)
        return self.valid_starts[index]

    def pick_like(self, like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """As many starts as ``like`` holds (every window has the clip's shape)."""
        return self.pick(len(like), generator)

    def sample(self, batch: int, generator: torch.Generator | None = None):
        return self.window(self.pick(batch, generator))

    def text_for(self, starts: torch.Tensor, first: int, last: int) -> None:
        """A decoded clip has no storyboard: the run's caption applies (same interface as the cache sampler)."""
        return None

    def fixed_starts(self, count: int) -> torch.Tensor:
        """``count`` evenly spaced window starts (for deterministic evaluation)."""
        index = torch.linspace(0, len(self.valid_starts) - 1, count).round().long()
        return self.valid_starts[index]
