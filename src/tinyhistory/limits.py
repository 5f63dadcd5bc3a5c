"""Bounds on the numbers a run is given, derived from what the run needs, each with a message naming the value.

Without them a typo does not fail: it runs. ``--segment-frames 100000`` for a 1-s storyboard allocates a segment's
noise and attention for minutes of video and climbs until the machine swaps; ``--steps 100000000000`` asks for a
scheduler table of 745 GiB; a 20-digit ``--seed`` ends in NumPy's "Overflow when unpacking long long". The CLI and
the studio check these before any work, with the same words.
"""

from __future__ import annotations

import math
from pathlib import Path

MAX_SAMPLING_STEPS = 10_000  # samplers are run with 1–100 steps; 10,000 is already hours per segment on a GPU
MAX_SEED = 2**63 - 1  # what torch.Generator.manual_seed and NumPy take without overflowing


def check_sampling_steps(steps: int | None, flag: str = "--steps") -> None:
    """Denoising steps per segment: 1 to :data:`MAX_SAMPLING_STEPS`."""
    if steps is not None and not 1 <= steps <= MAX_SAMPLING_STEPS:
        raise ValueError(
            f"{flag} {steps}: expected 1 to {MAX_SAMPLING_STEPS:,} denoising steps per segment (20–50 is usual)"
        )


def check_seed(seed: int | None, flag: str = "--seed") -> None:
    """A random seed: 0 to 2**63 − 1."""
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise ValueError(f"{flag} {seed}: expected a seed from 0 to {MAX_SEED} (2**63 - 1)")


def max_segment_frames(story_seconds: float, fps: float, temporal_factor: int, default: int) -> int:
    """The longest segment (latent frames) a storyboard of ``story_seconds`` can use: one that covers the whole
    storyboard, or the model's own segment when the storyboard is shorter than that."""
    return max(default, math.ceil(story_seconds * fps / max(1, temporal_factor)))


def check_segment_frames(
    frames: int | None, story_seconds: float, fps: float, temporal_factor: int, default: int, flag="--segment-frames"
) -> None:
    """A segment cannot be longer than the storyboard it generates (see :func:`max_segment_frames`)."""
    if frames is None:
        return
    limit = max_segment_frames(story_seconds, fps, temporal_factor, default)
    if not 1 <= frames <= limit:
        seconds = frames * max(1, temporal_factor) / fps
        raise ValueError(
            f"{flag} {frames}: a segment of {seconds:g} s is longer than the storyboard ({story_seconds:g} s); "
            f"expected 1 to {limit} latent frames (the model's segment: {default})"
        )


MAX_IMAGE_PIXELS = 89_478_485  # Pillow's own bound (a 0.25-GB RGB frame); larger files are refused, not shrunk


def check_image_pixels(path: str | Path, width: int, height: int) -> None:
    """An image to start from is at most :data:`MAX_IMAGE_PIXELS` pixels (Pillow warns, then raises its
    ``DecompressionBombError`` traceback past twice that; a frame is resized to a few hundred pixels anyway)."""
    if width * height > MAX_IMAGE_PIXELS:
        raise ValueError(
            f"{path}: an image of {width}x{height} pixels ({width * height / 1e6:.0f} MP) is over the limit of "
            f"{MAX_IMAGE_PIXELS / 1e6:.0f} MP; scale it down first (the model sees it at its own frame size)"
        )
