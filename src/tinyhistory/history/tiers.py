"""Tiered rates for long histories (``history.tiers``, issue 24): the newest seconds at a fine rate, older ones coarser.

Why: with one rate the context grows by the same number of tokens for every second of history, so at ten minutes the
targets attend to tens of thousands of history tokens at every denoising step. With tiers (e.g. the newest 20 s at
4×4×2 and everything older at 8×8×4) an old second costs a few tokens, so the context grows only at the coarsest
tier's rate and the step stays near the no-history step.

The rates are ``history.rates`` (one producer each, the multi-encoder path: each trains like any other rate), newest
(finest) first; ``history.tiers`` lists the seconds of every tier but the last, which holds the rest. The layout is a
function of the number of encoded latent frames ``T`` alone, so training, a fresh build and a session that grew
segment by segment all see the same tokens:

* boundary ``k`` (the start of tier ``k − 1``, the end of tier ``k``) sits at ``b_k = max(0, ⌊(b_{k−1} − F_{k−1}) /
  M⌋ · M)`` from ``b_0 = T``, with ``F`` the tiers' lengths and ``M`` the move (``history.tier_move``) in latent frames;
* so tier 0 holds between ``F₀`` and ``F₀ + M`` frames, a middle tier ``F`` rounded up to whole moves, and frames
  leave a tier **``M`` at a time** (whole chunks; all tiers move together): with
  the block-causal cache a move changes the moved chunk's tokens *and* the keys/values of every newer block (they
  attended to the chunk), so everything from the moved chunk on is recomputed at a move; moving whole chunks
  amortises that over ``M`` frames of generation (``tinyhistory cost`` counts it);
* the context is in time order, oldest (coarsest) tier first: what comes before a move's first changed frame is a
  prefix of the sequence and of the cache, kept as it was.

Each tier's tokens are its producer's tokens for its span, encoded with the causal lookback the producer needs (the
frames before the span, as :class:`~tinyhistory.history.streaming.IncrementalHistory` carries them), so they equal
the producer's tokens of the whole history cut to the span.

That is the ``"recompute"`` layout (``history.tier_layout``). The ``"stacked"`` layout (history/stacked.py) keeps
the same spans for the targets but gives the context every rate of every block, so that a move recomputes nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tinyhistory.backbones.base import ContextTokens
from tinyhistory.geometry import Rate, get_base, temporal_block


@dataclass(frozen=True)
class TierPlan:
    """Where each rate's tier lies in a history of ``T`` latent frames. Frames are latent frames."""

    rates: tuple[Rate, ...]  # newest (finest) first, one producer each
    frames: tuple[int, ...]  # every tier's length but the last's (the last holds the rest)
    move: int  # frames that leave a tier at once, a multiple of ``block``
    block: int  # the temporal block of all rates (lcm of rT): the steps the history is encoded in
    layout: str = "recompute"  # history.tier_layout: "recompute" or "stacked" (history/stacked.py)
    window: int = 0  # stacked: frames a context block attends to (its own included), a multiple of ``block``

    def __post_init__(self) -> None:
        if len(self.frames) != len(self.rates) - 1:
            raise ValueError(f"{len(self.rates)} tier rates need {len(self.rates) - 1} tier lengths, got {self.frames}")
        if self.move <= 0 or self.move % self.block:
            raise ValueError(f"the tier move ({self.move} frames) must be a positive multiple of {self.block}")
        if self.stacked and (self.window <= 0 or self.window % self.block):
            raise ValueError(
                f"the stacked layout's window ({self.window} frames) must be a positive multiple of {self.block}"
            )

    @property
    def stacked(self) -> bool:
        return self.layout == "stacked"

    @property
    def window_blocks(self) -> int:
        """The stacked layout's window in temporal blocks (0 for the recompute layout: no window)."""
        return self.window // self.block

    @classmethod
    def from_config(cls, history, base: str, fps: float) -> TierPlan | None:
        """The plan of ``history.tiers`` / ``history.tier_move`` (seconds) at ``fps`` for base geometry ``base``, or
        None without tiers. Seconds become latent frames (the paper's frames ÷ temporal factor), rounded **up** to
        whole temporal blocks, so a tier never holds less than it was asked to."""
        if not history.tiers:
            return None
        rates = tuple(Rate.parse(r) for r in history.rates)
        block = temporal_block(list(rates))
        geometry = get_base(base)

        def frames(seconds: float) -> int:
            latent = geometry.latent_frames(int(round(seconds * fps)))
            return max(1, math.ceil(latent / block)) * block

        lengths, move = tuple(frames(s) for s in history.tiers), frames(history.tier_move)
        if history.tier_layout == "stacked":
            return cls(rates, lengths, move, block, "stacked", frames(history.context_window))
        return cls(rates, lengths, move, block)

    def boundaries(self, frames: int) -> list[int]:
        """The start of every tier but the last (= the end of the next one), newest first, for ``frames`` frames."""
        out, end = [], frames
        for length in self.frames:
            end = max(0, (end - length) // self.move * self.move)
            out.append(end)
        return out

    def spans(self, frames: int) -> list[tuple[int, int]]:
        """``(start, end)`` latent frames of each tier (empty where start = end), in the order of ``rates``; only whole
        temporal blocks count (the history is encoded in them)."""
        frames = frames // self.block * self.block
        edges = [frames, *self.boundaries(frames), 0]
        return [(edges[i + 1], edges[i]) for i in range(len(self.rates))]

    def unchanged(self, before: int, after: int) -> int:
        """Frames at the start of the history whose tier is the same at ``after`` frames as at ``before`` (≤ before):
        the start of the earliest chunk that moved, else the whole of ``before``'s whole blocks."""
        before = before // self.block * self.block
        moved = [old for old, new in zip(self.boundaries(before), self.boundaries(after), strict=True) if old != new]
        return min([before, *moved])

    def check_every_tier_trains(self, longest_history: int, where: str) -> None:
        """Refuse a training run whose longest history (``longest_history`` latent frames) never reaches a tier:
        that tier's encoder would get no gradient, and generation past that length would read untrained tokens."""
        spans = self.spans(longest_history)
        idle = [str(rate) for rate, (start, end) in zip(self.rates, spans, strict=True) if start == end]
        if idle:
            raise ValueError(
                f"history.tiers keeps the newest {list(self.frames)} latent frames at the finer rates, but {where} "
                f"gives histories of at most {longest_history} latent frames, so the {', '.join(idle)} tier never "
                "appears in training and its encoder would not train: lengthen train.history_frames or shorten "
                "history.tiers (or history.tier_move)"
            )

    def describe(self) -> dict:
        """What a session's cache depends on (its identity): rates, tier lengths and move, in latent frames."""
        return {"rates": [str(r) for r in self.rates], "frames": list(self.frames), "move": self.move}


def encode_span(
    producer, hr: torch.Tensor, lr: torch.Tensor | None, start: int, end: int, patch_embed, frame_offset: int, features
) -> ContextTokens:
    """``producer``'s tokens of history frames ``[start, end)`` of ``hr`` ``(B, C, T, H, W)`` (``lr``: its LR latents
    for the whole history, one per temporal block), with the frames before ``start`` that its causal HR branch reads
    encoded too and their tokens dropped — the tokens a whole-history encode gives for the span."""
    rt = producer.rate.t
    lookback = min(start, math.ceil(producer.receptive_field / rt) * rt)
    first = start - lookback
    lr_part = lr[:, :, first // rt : end // rt] if lr is not None else None
    tokens = producer(hr[:, :, first:end], lr_part, patch_embed, frame_offset + first, return_features=features)
    per_block = tokens.num_tokens // ((end - first) // rt)
    return tokens.narrow(lookback // rt * per_block)


def encode_tiers(
    plan: TierPlan,
    producers,
    hr: torch.Tensor,
    lrs: list[torch.Tensor | None],
    patch_embed,
    frame_offset: int = 0,
    features: bool = False,
) -> ContextTokens | None:
    """The tiered context of history latents ``hr`` (one LR latent per producer): each tier's producer on its span,
    oldest (coarsest) tier first; None while the history holds no whole block."""
    parts = []
    spans = plan.spans(hr.shape[2])
    for producer, lr, (start, end) in reversed(list(zip(producers, lrs, spans, strict=True))):
        if end > start:
            parts.append(encode_span(producer, hr, lr, start, end, patch_embed, frame_offset, features))
    return ContextTokens.concat(parts) if parts else None


def select_tiers(plan: TierPlan, contexts: list[ContextTokens], frames: int) -> ContextTokens | None:
    """The tiered context out of every producer's tokens of the whole history (``contexts``, in the order of the
    rates; each in block order from frame 0 over ``frames`` encoded frames): what a session that encodes every rate
    as the history grows shows the DiT. None while no tier holds a block."""
    parts = []
    for context, rate, (start, end) in reversed(list(zip(contexts, plan.rates, plan.spans(frames), strict=True))):
        if end > start:
            per_block = context.num_tokens // (frames // rate.t)
            parts.append(context.narrow(start // rate.t * per_block, (end - start) // rate.t * per_block))
    return ContextTokens.concat(parts) if parts else None
