"""What a starting history will cost before anything is generated: the frames a session keeps of it (whole
temporal blocks of latents, the last ones), its latent frames and the context tokens the DiT will see.

Counted from the loaded model's own encoders (their rates and the DiT's token grid, as
:func:`tinyhistory.geometry.history_grid` counts a history grid) and its sliding window, so the page can say it while
the user is still choosing; the tests check every number against a real ``GenerationSession``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tinyhistory.studio.engine import Loaded


@dataclass(frozen=True)
class HistoryCost:
    """A starting history as the session will hold it, and the context tokens it costs the DiT."""

    given_frames: int  # frames of the upload at the model's frame rate
    kept_frames: int  # the last ones, that make whole temporal blocks of latents
    latent_frames: int
    seconds: float  # kept_frames / fps
    context_tokens: int
    note: str = ""  # what an image start becomes, said instead of the frames dropped

    def describe(self, fps: float) -> str:
        if self.kept_frames == 0:
            return self.note or "no history: the first segment is generated from nothing"
        dropped = self.given_frames - self.kept_frames
        dropped_text = "the first frame is" if dropped == 1 else f"the first {dropped} frames are"
        note = f" ({dropped_text} dropped: history is kept in whole blocks)" if dropped > 0 else ""
        return (
            f"history {self.seconds:.2f} s: {self.kept_frames} frames at {fps:g} fps{self.note or note}, "
            f"{self.latent_frames} latent frames, {self.context_tokens} context tokens"
        )


def context_tokens(loaded: Loaded, latent_frames: int) -> int:
    """Context tokens the DiT sees for ``latent_frames`` of history: each encoder's tokens for the whole temporal
    blocks so far (its history grid, as :func:`tinyhistory.geometry.history_grid` counts it), plus the sliding
    window's uncompressed frames. Equal to ``GenerationSession.context().num_tokens`` (tested)."""
    from tinyhistory.geometry import history_grid, temporal_block

    model = loaded.model
    height, width = loaded.frame_shape
    s = loaded.codec.spatial_factor
    pt, ph, pw = model.backbone.patch_size
    grid = (latent_frames // pt, height // s // ph, width // s // pw)
    block = temporal_block([p.rate for p in model.producers])
    whole = latent_frames // block * block
    tokens = sum(math.prod(history_grid((whole // pt, grid[1], grid[2]), p.rate)) for p in model.producers)
    window = min(model.sliding_window, latent_frames) if model.sliding_window > 0 else 0
    return tokens + window // pt * grid[1] * grid[2]


def latent_frames_of(loaded: Loaded, pixel_frames: int) -> int:
    """Latent frames of ``pixel_frames`` frames (a causal VAE: the first latent is one frame, later ones f)."""
    f = loaded.codec.temporal_factor
    return 0 if pixel_frames == 0 else (1 + (pixel_frames - 1) // f if f > 1 else pixel_frames)


def history_cost(loaded: Loaded, given_frames: int) -> HistoryCost:
    """What a starting video of ``given_frames`` frames (at the model's fps) will be in the session."""
    block = _block(loaded)
    f = loaded.codec.temporal_factor
    latents = latent_frames_of(loaded, given_frames) // block * block
    kept = 0 if latents == 0 else (1 + f * (latents - 1) if f > 1 else latents)
    return HistoryCost(given_frames, kept, latents, kept / loaded.fps, context_tokens(loaded, latents))


def image_cost(loaded: Loaded) -> HistoryCost:
    """An image start: one temporal block of the still frame (no tokens on Wan 2.2 TI2V, whose image is the first
    frame of the first segment instead)."""
    if loaded.recipe.first_frame:
        note = "the image is the first frame of the first segment (the model's own image conditioning), no history"
        return HistoryCost(1, 0, 0, 0.0, 0, note)
    f = loaded.codec.temporal_factor
    block = _block(loaded)
    frames = 1 + f * (block - 1) if f > 1 else block
    return replace(history_cost(loaded, frames), given_frames=1, note=" (the image, held still)")


def _block(loaded: Loaded) -> int:
    from tinyhistory.geometry import temporal_block

    return max(temporal_block([p.rate for p in loaded.model.producers]), 1)


def storyboard_cost(loaded: Loaded, story, start_latents: int, segment_frames: int) -> tuple[int, int]:
    """``(segments, context tokens of the last segment)`` for a storyboard after ``start_latents`` of history."""
    seconds = segment_frames * loaded.codec.temporal_factor / loaded.fps
    segments = math.ceil(story.duration / seconds - 1e-9)
    return segments, context_tokens(loaded, start_latents + (segments - 1) * segment_frames)
