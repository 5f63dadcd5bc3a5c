"""History producers: the history encoder, the Large Patchifier baseline, incremental encoding."""

from tinyhistory.history.base import block_positions, downsample_pixels, lowres_latents
from tinyhistory.history.encoder import EncoderConfig, HistoryEncoder
from tinyhistory.history.patchifier import LargePatchifier

__all__ = [
    "EncoderConfig",
    "HistoryEncoder",
    "LargePatchifier",
    "block_positions",
    "downsample_pixels",
    "lowres_latents",
]
