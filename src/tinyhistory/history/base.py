"""The history-producer seam: anything that turns history latents into :class:`ContextTokens`.

Producers: :class:`~tinyhistory.history.encoder.HistoryEncoder` (the paper's method and its ablations) and
:class:`~tinyhistory.history.patchifier.LargePatchifier` (the FramePack-equivalent baseline). Both give tokens on
the same floor grid with the same block-centre positions, so comparisons between them are fair.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tinyhistory.backbones.base import ContextTokens, grid_positions
from tinyhistory.codecs.base import Codec, crop_to_factor
from tinyhistory.geometry import Rate


def block_positions(
    batch: int, grid: tuple[int, int, int], rate: Rate, frame_offset: int = 0, device=None
) -> torch.Tensor:
    """Exact block centres ``(B, T·H·W, 3)`` in DiT-token units for a history grid at ``rate``.

    History token (i, j, k) covers DiT tokens ``[i·rT, (i+1)·rT) × [j·rH, …) × [k·rW, …)`` of a history that starts
    at DiT frame ``frame_offset``; its position is the centre of that block (fractional, not FramePack's averaged
    cos/sin).
    """
    t, h, w = grid
    frames = frame_offset + torch.arange(t, dtype=torch.float64, device=device) * rate.t + (rate.t - 1) / 2
    return grid_positions(frames.expand(batch, t), h, w, scale=(rate.t, rate.h, rate.w))


def tokens_from_grid(
    grid: torch.Tensor, rate: Rate, frame_offset: int = 0, features: torch.Tensor | None = None, source: int = 0
) -> ContextTokens:
    """``(B, D, T, H, W)`` grid → ContextTokens in (frame, row, column) order with block-centre positions.

    ``features``: an optional ``(B, F, T, H, W)`` grid on the same cells, flattened the same way; ``source``: the
    producer's index in ``HistoryDiT.producers`` (``ContextTokens.sources``).
    """
    b, _, t, h, w = grid.shape
    tokens = grid.flatten(2).transpose(1, 2)
    flat_features = features.flatten(2).transpose(1, 2) if features is not None else None
    positions = block_positions(b, (t, h, w), rate, frame_offset, grid.device)
    return ContextTokens(tokens, positions, flat_features).from_source(source)


def downsample_pixels(pixels: torch.Tensor, rate: Rate, temporal_factor: int = 1) -> torch.Tensor:
    """Area-downsample ``(B, 3, T, H, W)`` pixels by ``(rT, rH, rW)`` so that LR latent ``b`` covers exactly the
    pixels of the HR branch's temporal block ``b`` (floor at the end).

    With a framewise codec (``temporal_factor`` f = 1) this is plain average pooling over blocks of rT frames. A
    causal VAE makes latent 0 of frame 0 alone and latent j of frames 4j−3 … 4j, so the HR branch's first block of rT
    latents holds ``1 + f·(rT − 1)`` pixel frames and every later block ``f·rT``. The LR video is encoded by the same
    VAE, so its first frame is the mean of those first ``1 + f·(rT − 1)`` frames and every later LR frame the mean of
    ``rT`` frames: LR latent 0 is block 0's pixels, LR latent b ≥ 1 (LR frames 4b−3 … 4b) is block b's ``f·rT``.
    """
    kernel = (rate.t, rate.h, rate.w)
    first = 1 + temporal_factor * (rate.t - 1)
    if temporal_factor == 1 or pixels.shape[2] < first:
        return F.avg_pool3d(pixels, kernel_size=kernel, stride=kernel)
    head = F.avg_pool3d(pixels[:, :, :first], kernel_size=(first, rate.h, rate.w), stride=(first, rate.h, rate.w))
    tail = F.avg_pool3d(pixels[:, :, first:], kernel_size=kernel, stride=kernel)
    return torch.cat([head, tail], dim=2)


def lowres_latents(pixels: torch.Tensor, rate: Rate, codec: Codec) -> torch.Tensor:
    """The LR branch's input (SPEC §3.2): the pixel video downsampled by the rate, through the base codec."""
    lowres = downsample_pixels(pixels, rate, codec.temporal_factor)
    return codec.encode(crop_to_codec(floor_to_causal_frames(lowres, codec.temporal_factor), codec))


def floor_to_causal_frames(pixels: torch.Tensor, temporal_factor: int) -> torch.Tensor:
    """The first ``1 + f·k`` frames of ``(B, 3, T, H, W)`` pixels, the most a causal VAE (factor f > 1) encodes whole.

    The LR video rarely has that length (17 frames at rT = 2: 1 + 6 LR frames), and its leftover frames make no
    whole latent. Wan's VAE drops them itself (it encodes frame 0, then whole 4-frame chunks); HunyuanVideo's refuses
    the length, so the floor is taken here, once, for every causal codec alike.
    """
    if temporal_factor <= 1 or pixels.shape[2] == 0:
        return pixels
    return pixels[:, :, : 1 + (pixels.shape[2] - 1) // temporal_factor * temporal_factor]


def crop_to_codec(pixels: torch.Tensor, codec: Codec) -> torch.Tensor:
    """Keep the top-left ``(H, W)`` that are multiples of the codec's spatial factor (floor, SPEC §9).

    The LR frames are the HR frames divided by the rate, e.g. 480×832 → 120×208 at 4×4, which Wan 2.2's 16× VAE
    cannot encode (120 is not a multiple of 16). The HR branch's token grid floors the same rows and columns away
    (480/16/2/4 = 3.75 → 3 rows), so cropping the remainder keeps both branches on the same grid.
    """
    return crop_to_factor(pixels, codec.spatial_factor)


def lowres_latents_per_rate(
    pixels: torch.Tensor, rates: list[Rate], uses_lr: list[bool], codec: Codec
) -> list[torch.Tensor | None]:
    """One LR latent per encoder (``None`` where the encoder has no LR branch), in the order the model takes them."""
    return [lowres_latents(pixels, r, codec) if use else None for r, use in zip(rates, uses_lr, strict=True)]


def lr_frames(
    lr: list[torch.Tensor | None], rates: list[Rate], start: int, stop: int | None = None
) -> list[torch.Tensor | None]:
    """Each producer's LR latents ``(B, C, T/rT, h, w)`` of history frames ``start`` to ``stop`` (None: the end),
    both on a block boundary of every rate (one LR latent frame per temporal block); ``None`` stays ``None``."""
    return [
        x[:, :, start // r.t : None if stop is None else stop // r.t] if x is not None else None
        for r, x in zip(rates, lr, strict=True)
    ]


def splice_frames(x: torch.Tensor, other: torch.Tensor, start: int, stop: int, per: int = 1) -> torch.Tensor:
    """``x`` ``(B, C, T, …)`` with frames ``[start, stop)`` taken from ``other`` (same shape), a new tensor; ``per``:
    frames per entry along ``T`` (an LR latent frame covers ``rT`` frames; both bounds on its block boundary)."""
    spliced = x.clone()
    spliced[:, :, start // per : stop // per] = other[:, :, start // per : stop // per]
    return spliced


def no_producer(method: str, rate: str, history, backbone) -> None:
    """``history.method = "no_history"``: the model sees no history tokens."""
    return None
