"""Training objectives as objects: stage I frame query (SPEC §4), stage II next segment (SPEC §5).

An objective gives the training loop everything that differs between the stages — the batch it builds from a
window, the span of the window whose storyboard prompt conditions it, the loss, and the text dropout — so the loop
in ``trainer.py`` has no stage branches. ``objective_for(cfg.train)`` picks the stage's object.

For a history ``H`` of T latent frames:

* Ω: ``k`` frames (k uniform in [1, query_window], one k per batch so tensors stay rectangular) drawn uniformly
  without replacement from anywhere in the history, sorted;
* ``mask(H, Ω)``: Ω frames stay clean; every other frame is noised at its own level ``s ~ L(mask_low, 1)``;
  the LR latents get the same treatment per LR frame, at the lowest level among the frames the LR frame covers
  (an LR frame holding an Ω frame stays clean);
* targets: clean copies of ``H[Ω]`` at their original temporal positions, noised at ``t ~ L(0, 1)``;
* loss: velocity MSE on target tokens only (context outputs are dropped inside the backbone).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from tinyhistory.backbones import ContextTokens
from tinyhistory.config import TrainConfig
from tinyhistory.flow import add_noise, add_noise_per_frame, sample_mask_levels, velocity_target
from tinyhistory.geometry import Rate, temporal_block
from tinyhistory.history.base import lr_frames, splice_frames
from tinyhistory.text.condition import TextCondition


@dataclass
class FrameQueryBatch:
    history: torch.Tensor  # (B, C, T, H, W) masked HR latents
    history_lr: list[torch.Tensor | None]  # one (B, C, T/rT, h, w) masked LR latent per producer
    omega: torch.Tensor  # (B, k) indices of the queried frames (also their temporal positions)
    targets: torch.Tensor  # (B, C, k, H, W) clean H[Ω]
    noise: torch.Tensor  # (B, C, k, H, W)
    t: torch.Tensor  # (B,)
    mask_levels: torch.Tensor  # (B, T) noise level of each history frame (0 on Ω)

    @property
    def noisy_targets(self) -> torch.Tensor:
        return add_noise(self.targets, self.noise, self.t)


def sample_omega(
    batch: int, frames: int, window: int, generator: torch.Generator | None = None, k: int | None = None
) -> torch.Tensor:
    """``(B, k)`` sorted frame indices, uniform without replacement per sample.

    k is drawn uniformly from [1, window] unless given.
    """
    if k is None:
        k = int(torch.randint(1, min(window, frames) + 1, (1,), generator=generator))
    if not 1 <= k <= frames:
        raise ValueError(f"cannot query {k} frames from a history of {frames} frames")
    order = torch.rand(batch, frames, generator=generator).argsort(dim=1)
    return order[:, :k].sort(dim=1).values


def make_frame_query_batch(
    hr: torch.Tensor,
    lr: list[torch.Tensor | None],
    rates: list[Rate],
    window: int,
    mask_low: float = 0.2,
    shift: float = 1.0,
    generator: torch.Generator | None = None,
    num_queries: int | None = None,
    min_t: float = 0.0,
) -> FrameQueryBatch:
    """Draw Ω, mask the history (HR and every LR latent) and build the noisy targets. Shapes in the class.

    ``num_queries`` fixes |Ω| (evaluation); by default it is drawn uniformly from [1, window] (training).
    """
    b, c, frames, h, w = hr.shape
    omega = sample_omega(b, frames, window, generator, k=num_queries)
    levels = sample_mask_levels((b, frames), low=mask_low, shift=shift, generator=generator)
    levels.scatter_(1, omega, 0.0)
    history = add_noise_per_frame(hr, torch.randn(hr.shape, generator=generator), levels)

    masked_lr: list[torch.Tensor | None] = []
    for rate, lr_latent in zip(rates, lr, strict=True):
        if lr_latent is None:
            masked_lr.append(None)
            continue
        n_lr = lr_latent.shape[2]
        lr_levels = levels[:, : n_lr * rate.t].reshape(b, n_lr, rate.t).amin(dim=2)
        masked_lr.append(add_noise_per_frame(lr_latent, torch.randn(lr_latent.shape, generator=generator), lr_levels))

    index = omega[:, None, :, None, None].expand(b, c, omega.shape[1], h, w)
    targets = hr.gather(2, index)
    noise = torch.randn(targets.shape, generator=generator)
    t = sample_mask_levels((b,), low=min_t, shift=shift, generator=generator)
    return FrameQueryBatch(history, masked_lr, omega, targets, noise, t, levels)


def frame_query_loss(model, batch: FrameQueryBatch, text: TextCondition) -> torch.Tensor:
    """Velocity MSE on the queried frames, conditioned on the compressed masked history."""
    context: ContextTokens | None = model.encode_history(batch.history, batch.history_lr)
    prediction = model(batch.noisy_targets, batch.t, text, context, frame_positions=batch.omega)
    return F.mse_loss(prediction.float(), velocity_target(batch.targets, batch.noise).float())


# -- Stage II: autoregressive next-segment prediction (SPEC §5) ------------------------------------------------


@dataclass
class NextSegmentBatch:
    """A window split at one block boundary ``s`` (the same for the batch): clean history, then the target segment."""

    history: torch.Tensor  # (B, C, s, H, W) clean history latents (s may be 0: no history)
    history_lr: list[torch.Tensor | None]  # per producer (B, C, s/rT, h, w) clean LR latents
    targets: torch.Tensor  # (B, C, n, H, W) the next n latent frames
    positions: torch.Tensor  # (B, n) their temporal positions s … s+n−1
    noise: torch.Tensor  # (B, C, n, H, W)
    t: torch.Tensor  # (B,)
    window: bool = True  # the sliding window's frames are in the context (False: a step of train.window_dropout)

    @property
    def noisy_targets(self) -> torch.Tensor:
        return add_noise(self.targets, self.noise, self.t)


def split_points(frames: int, segment: int, block: int) -> list[int]:
    """History lengths a window of ``frames`` can be split at: block multiples leaving room for the segment."""
    return list(range(0, frames - segment + 1, block))


def make_next_segment_batch(
    hr: torch.Tensor,
    lr: list[torch.Tensor | None],
    rates: list[Rate],
    segment: int,
    shift: float = 1.0,
    generator: torch.Generator | None = None,
    split: int | None = None,
    min_t: float = 0.0,
) -> NextSegmentBatch:
    """Split the window at a random block boundary (or at ``split``) into history and the next ``segment`` frames.

    The history is clean and complete (no Ω, no mask); LR latents are cut at the same point. A split of 0 trains
    generation from nothing (text only).
    """
    b, c, frames, h, w = hr.shape
    block = temporal_block(rates)
    points = split_points(frames, segment, block)
    if not points:
        raise ValueError(f"a window of {frames} frames cannot hold a {segment}-frame target segment")
    if split is None:
        split = points[int(torch.randint(0, len(points), (1,), generator=generator))]
    elif split not in points:
        raise ValueError(f"split {split} is not one of the valid history lengths {points}")
    history_lr = lr_frames(lr, rates, 0, split)
    targets = hr[:, :, split : split + segment]
    positions = torch.arange(split, split + segment).expand(b, segment)
    noise = torch.randn(targets.shape, generator=generator)
    t = sample_mask_levels((b,), low=min_t, shift=shift, generator=generator)
    return NextSegmentBatch(hr[:, :, :split], history_lr, targets, positions, noise, t)


def noise_history(batch: NextSegmentBatch, max_level: float, generator: torch.Generator | None) -> NextSegmentBatch:
    """The batch with its history noised at one level σ ~ U(0, ``max_level``) per sample, ``(1 − σ)·x + σ·ε``, on
    the latents and on every producer's LR latents alike (``train.history_noise``); the targets are untouched."""
    b = batch.history.shape[0]
    sigma = torch.rand((b,), generator=generator) * max_level  # (B,)

    def noised(x: torch.Tensor | None) -> torch.Tensor | None:
        if x is None or x.shape[2] == 0:
            return x
        return add_noise(x, torch.randn(x.shape, generator=generator), sigma)

    return replace(batch, history=noised(batch.history), history_lr=[noised(x) for x in batch.history_lr])


def drop_recent_history(batch: NextSegmentBatch, frames: int, rates: list[Rate]) -> NextSegmentBatch:
    """The batch with the last ``frames`` frames of its history gone, rounded up to whole temporal blocks (LR latents
    are per block), and the sliding window with them (``train.history_gap``): the targets keep their true positions,
    so they are predicted across a gap from the older history alone. A history no longer than the gap becomes none.

    Why: the next second resembles the last frames, so a model that always has them reads them and nothing older;
    a returning shot is only recalled by a model that learned to reach past them."""
    block = temporal_block(rates)
    keep = max(0, batch.history.shape[2] - frames) // block * block  # frames of history left, whole blocks
    history_lr = lr_frames(batch.history_lr, rates, 0, keep)
    return replace(batch, history=batch.history[:, :, :keep], history_lr=history_lr, window=False)


def splice_cutaway(
    hr: torch.Tensor,
    lr: list[torch.Tensor | None],
    other_hr: torch.Tensor,
    other_lr: list[torch.Tensor | None],
    rates: list[Rate],
    start: int,
    length: int,
) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
    """Windows ``hr`` ``(B, C, T, H, W)`` (and their LR latents) with frames ``[start, start + length)`` replaced by
    the same frames of other windows: a cut away to another shot and back, the window's own time going on meanwhile
    (``train.cutaway_share``). Both bounds on a block boundary of every rate (an LR latent frame is a whole block).

    Why: a real shot that returns within a training window is rare (the miniature's 3,072 training frames hold 11
    within 2 s), so a model learns to read its last frames and nothing older; here every such step's target continues
    a shot that the last frames before its cue do not show and the older history does."""
    block = temporal_block(rates)
    if start % block or length % block or start < 0 or start + length > hr.shape[2]:
        raise ValueError(
            f"a cut-away of frames [{start}, {start + length}) must lie in the {hr.shape[2]}-frame window on "
            f"{block}-frame block boundaries"
        )
    stop = start + length
    spliced_lr = [
        None if x is None else splice_frames(x, y, start, stop, r.t)
        for r, x, y in zip(rates, lr, other_lr, strict=True)
    ]
    return splice_frames(hr, other_hr, start, stop), spliced_lr


def next_segment_loss(model, batch: NextSegmentBatch, text: TextCondition) -> torch.Tensor:
    """Velocity MSE on the target segment, conditioned on everything the model sees of the clean history."""
    context = model.history_context(batch.history, batch.history_lr, window=batch.window)
    prediction = model(batch.noisy_targets, batch.t, text, context, frame_positions=batch.positions)
    return F.mse_loss(prediction.float(), velocity_target(batch.targets, batch.noise).float())


# -- The objectives as objects (what the training loop calls) --------------------------------------------------


class FrameQueryObjective:
    """Stage I: reconstruct randomly queried history frames from the compressed, masked history."""

    name = "frame-query"

    def __init__(self, train: TrainConfig):
        self.train = train
        self.text_dropout = 0.0  # the paper conditions stage I on the storyboard prompt throughout
        self.window_dropout = 0.0  # stage I has no sliding window
        self.history_noise = 0.0  # stage I masks its history instead
        self.history_gap = 0.0  # stage I has no next segment to predict across a gap

    def batch(self, hr: torch.Tensor, lr: list[torch.Tensor | None], rates: list[Rate], generator) -> FrameQueryBatch:
        tc = self.train
        return make_frame_query_batch(
            hr, lr, rates, tc.query_window, tc.mask_low, tc.timestep_shift, generator, min_t=tc.min_t
        )

    def prompt_span(self, batch: FrameQueryBatch) -> tuple[int, int]:
        """Latent frames whose nearest storyboard shot is the prompt: the whole window."""
        return 0, batch.history.shape[2]

    def loss(self, model, batch: FrameQueryBatch, text: TextCondition) -> torch.Tensor:
        return frame_query_loss(model, batch, text)


class NextSegmentObjective:
    """Stage II: predict the next segment from the whole clean history (random split), with text dropout for CFG."""

    name = "ar"

    def __init__(self, train: TrainConfig):
        self.train = train
        self.text_dropout = train.text_dropout
        self.window_dropout = train.window_dropout
        self.history_noise = train.history_noise
        self.history_gap = train.history_gap

    def batch(
        self, hr: torch.Tensor, lr: list[torch.Tensor | None], rates: list[Rate], generator, split: int | None = None
    ) -> NextSegmentBatch:
        """``split``: the history length (a random block boundary when None)."""
        tc = self.train
        return make_next_segment_batch(
            hr, lr, rates, tc.segment_frames, tc.timestep_shift, generator, split=split, min_t=tc.min_t
        )

    def prompt_span(self, batch: NextSegmentBatch) -> tuple[int, int]:
        """The paper's rule: the storyboard shot nearest to the target segment."""
        first = int(batch.positions[0, 0])  # the targets' true position (a history gap leaves it)
        return first, first + batch.targets.shape[2]

    def loss(self, model, batch: NextSegmentBatch, text: TextCondition) -> torch.Tensor:
        return next_segment_loss(model, batch, text)


OBJECTIVES = {"frame-query": FrameQueryObjective, "ar": NextSegmentObjective}
Objective = FrameQueryObjective | NextSegmentObjective  # what the loop and the held-out loss take


def objective_for(train: TrainConfig) -> Objective:
    """The objective of ``train.stage``."""
    return OBJECTIVES[train.stage](train)


def drop_text(
    text: TextCondition, empty: TextCondition, fraction: float, generator: torch.Generator | None
) -> TextCondition:
    """Classifier-free guidance training: each sample's prompt becomes ``empty`` with probability ``fraction``."""
    keep = torch.rand(len(text), generator=generator) >= fraction
    return text.where(keep, empty)
