"""Teacher-forced next-segment prediction: does the history help the stage-II model predict what comes next?

For evenly spaced held-out windows, the model sees the *true* history (``history_frames`` frames) and generates the
next ``segment`` frames from fixed noise (the same noise for every model); the result is compared with the true
segment:

* ``psnr`` / ``ssim``: pixel agreement with the true segment (mean over frames and windows; a frame reproduced
  exactly counts as 58.9 dB, the 8-bit rounding limit, :func:`~tinyhistory.eval.metrics.psnr_capped`);
* ``psnr_one_step``: the same for the one-step estimate from the fixed noise, ``x0 = ε − v(ε, t=1)``: the model's
  mean guess. A sample invents texture that the truth does not share, which costs up to 3 dB whatever the model
  knows; the mean guess shows what the history told it;
* ``feature_to_truth``: cosine of ImageNet MobileNetV2 features of each generated frame and its true frame;
* ``feature_to_history``: the ``to_history_mean`` score of :func:`~tinyhistory.eval.features.feature_consistency`
  (generated frames against the window's history frames);
* ``lpips`` (AlexNet) when its weights are installed.

:func:`reference_metrics` scores what copying the history would reach (the last frame held; the last LR input held),
so a model's number can be read against what its own context hands it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from tinyhistory.backbones.base import ContextTokens
from tinyhistory.data.windows import batch_to_uint8
from tinyhistory.eval.metrics import per_frame, psnr_capped, ssim
from tinyhistory.generate.session import SamplingSettings, sample_segment
from tinyhistory.geometry import temporal_block
from tinyhistory.history.base import lowres_latents, lowres_latents_per_rate, lr_frames, splice_frames
from tinyhistory.text.condition import TextCondition


@dataclass
class NextSegmentSet:
    pixels: torch.Tensor  # (B, 3, history + segment, H, W) true windows
    starts: list[int]
    history_frames: int
    segment: int
    noise: torch.Tensor  # (B, C, segment, h, w) fixed initial noise
    _features: tuple | None = field(default=None, init=False, repr=False)  # (model, truth, history) features
    # (codec, HR latents, {(rates, uses_lr): LR latents per rate}) of the history frames
    _latents: tuple | None = field(default=None, init=False, repr=False)

    def history_latents(self, codec, rates: list, uses_lr: list[bool]) -> tuple[torch.Tensor, list]:
        """The history frames encoded by ``codec``: HR latents ``(B, C, h, …)`` and each rate's LR latents (None
        where a producer reads none), computed once per codec (and rates) and kept (every model, and every history
        mode of a model, reads the same ones)."""
        history_px = self.pixels[:, :, : self.history_frames]
        if self._latents is None or self._latents[0] is not codec:
            self._latents = (codec, codec.encode(history_px), {})
        _, hr, lowres = self._latents
        key = (tuple(str(r) for r in rates), tuple(uses_lr))
        if key not in lowres:
            lowres[key] = lowres_latents_per_rate(history_px, rates, uses_lr, codec)
        return hr, lowres[key]

    def reference_features(self, features) -> tuple[torch.Tensor, torch.Tensor]:
        """MobileNetV2 features of the true segments ``(B·segment, F)`` and mean history feature per window
        ``(B, F)``, computed once per feature model and kept (every model is scored against the same ones)."""
        cached = self._features
        if cached is None or cached[0] is not features:
            b, h = self.pixels.shape[0], self.history_frames
            history = features(batch_to_uint8(self.pixels[:, :, :h]))
            cached = (features, features(self.truth), history.reshape(b, h, -1).mean(1))
            self._features = cached
        return cached[1], cached[2]

    @property
    def truth(self) -> np.ndarray:
        """``(B·segment, H, W, 3)`` uint8 true segment frames."""
        return batch_to_uint8(self.pixels[:, :, self.history_frames :])


def next_segment_set(
    pixels: torch.Tensor,
    codec,
    history_frames: int,
    segment: int,
    windows: int,
    seed: int = 0,
    starts: list[int] | None = None,
) -> NextSegmentSet:
    """Evenly spaced windows of a ``(3, T, H, W)`` clip, each ``history_frames`` + ``segment`` frames long (or the
    windows starting at ``starts``, e.g. the long-range seconds of :mod:`tinyhistory.eval.long_range`)."""
    length = history_frames + segment
    if pixels.shape[1] < length:
        raise ValueError(f"clip has {pixels.shape[1]} frames, fewer than history + segment = {length}")
    if starts is None:
        starts = torch.linspace(0, pixels.shape[1] - length, windows).round().long().tolist()
    elif any(not 0 <= s <= pixels.shape[1] - length for s in starts):
        raise ValueError(f"window starts {starts} must lie in [0, {pixels.shape[1] - length}] for this clip")
    windows = len(starts)
    windows_px = torch.stack([pixels[:, s : s + length] for s in starts])
    latent = codec.encode(windows_px[:1, :, :segment])
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn((windows, *latent.shape[1:]), generator=generator)
    return NextSegmentSet(windows_px, starts, history_frames, segment, noise)


def cutaway_set(eval_set: NextSegmentSet, frames: int, cue: int) -> NextSegmentSet:
    """``eval_set``'s windows with a cut-away spliced into each history: the ``frames`` history frames that end
    ``cue`` frames before the target replaced by the same frames of the window half the set away (another part of
    the clip: another shot, as a rule), the same noise. The history then shows the target's shot, cuts away from it,
    and ends in ``cue`` frames of its return; a model that reads only its last frames sees the return's first frames
    and the other shot, one that reads its older history sees the shot before the cut too. A held-out, controlled
    long-range second (the real ones are few and start at real cuts; ``train.cutaway_share`` trains on the same
    splice). Frames stay block-aligned when ``frames`` and ``cue`` are multiples of the temporal block."""
    h, count = eval_set.history_frames, eval_set.pixels.shape[0]
    start = h - cue - frames
    if frames <= 0 or cue < 0 or start <= 0 or count < 2:
        raise ValueError(
            f"a cut-away of {frames} frames and a {cue}-frame cue must leave older history in {h} history frames "
            f"(and the set needs 2 windows or more, it has {count})"
        )
    other = [(i + count // 2) % count for i in range(count)]
    pixels = splice_frames(eval_set.pixels, eval_set.pixels[other], start, start + frames)  # as training splices
    return NextSegmentSet(pixels, eval_set.starts, h, eval_set.segment, eval_set.noise)


HISTORY_MODES = ("true", "removed", "foreign", "recent", "older")


@torch.no_grad()
def window_context(
    model, eval_set: NextSegmentSet, codec, history: str = "true", recent: int = 0
) -> ContextTokens | None:
    """What ``model`` sees of each window's history (on the model's device): its own (``true``), the next window's
    (``foreign``), none (``removed``), only its last ``recent`` frames at their true positions (``recent``: the
    older history gone, what a memory adds over them), or all but them (``older``: the encoder's tokens of the
    history before its last ``recent`` frames, rounded up to whole temporal blocks, without the sliding window, as a
    ``train.history_gap`` step sees it: whether the model reads anything but its last frames), encoded with the
    model's producers and sliding window."""
    if history not in HISTORY_MODES:
        raise ValueError(f"history mode {history!r} is not one of {HISTORY_MODES}")
    if history == "removed":
        return None
    device = next(model.parameters()).device
    rates, uses_lr = [p.rate for p in model.producers], [p.uses_lr for p in model.producers]
    hr, lr = eval_set.history_latents(codec, rates, uses_lr)
    # another window's history: each window is encoded on its own, so rolling the encodings is encoding the roll
    shift = 1 if history == "foreign" else 0
    hr = hr.roll(shift, dims=0).to(device)
    lr = [x.roll(shift, dims=0).to(device) if x is not None else None for x in lr]
    if history not in ("recent", "older"):
        return model.history_context(hr, lr)
    frames = hr.shape[2]
    block = temporal_block(rates)  # 1 without encoders
    if history == "older":
        if not 0 < recent < frames:
            raise ValueError(f"the older history leaves out the last 1-{frames - 1} of {frames} frames, got {recent}")
        keep = (frames - recent) // block * block  # LR latents are per block: whole blocks before the gap
        if keep == 0:
            return None
        return model.history_context(hr[:, :, :keep], lr_frames(lr, rates, 0, keep), window=False)
    if not 0 < recent <= frames or (frames - recent) % block:
        raise ValueError(
            f"the recent history must be 1-{frames} frames and leave whole temporal blocks of {block} frames out "
            f"before it (LR latents are per block), got {recent}"
        )
    first = frames - recent  # the frame the kept history starts at; LR latents cut at the same block boundary
    return model.history_context(hr[:, :, first:], lr_frames(lr, rates, first), frame_offset=first)


@torch.no_grad()
def evaluate_next_segment(
    model,
    eval_set: NextSegmentSet,
    text: TextCondition,
    codec,
    settings: SamplingSettings,
    features=None,
    lpips=None,
    history: str = "true",
    low_noise=None,
    recent: int = 0,
) -> tuple[dict, np.ndarray]:
    """Metrics of one model; returns (metrics, generated frames ``(B·segment, H, W, 3)`` uint8).

    ``history``: ``true`` (the window's own history), ``removed`` (no context at all), ``foreign`` (the next
    window's history: same statistics, wrong content) — these two ask whether *this* model uses its history — or
    ``recent`` (only its last ``recent`` frames: whether it uses the *older* history, :func:`window_context`) or
    ``older`` (all but its last ``recent`` frames: whether it reads the older history at all).
    ``low_noise``: a second expert's DiT for the steps below ``settings.boundary`` (without history, as in
    generation: :func:`~tinyhistory.generate.session.sample_segment`); the one-step estimate is ``model``'s (t = 1).
    """
    model.eval()
    device = next(model.parameters()).device
    h = eval_set.history_frames
    context = window_context(model, eval_set, codec, history, recent)
    b = eval_set.noise.shape[0]
    positions = torch.arange(h, h + eval_set.segment, device=device).expand(b, -1)
    noise, txt = eval_set.noise.to(device), text.to(device).expand(b)
    latents = sample_segment(model, noise, txt, context, positions, settings, low_noise=low_noise)
    generated_px = codec.decode(latents.float().cpu())
    generated = batch_to_uint8(generated_px)
    # The one-step estimate x0 = ε − v(ε, t=1): the model's mean guess, free of the texture a sample invents
    # (the conditional prediction alone: guidance sharpens samples, not the mean).
    t_one = torch.ones(b, device=device)
    one_step_px = codec.decode((noise - model(noise, t_one, txt, context, frame_positions=positions)).float().cpu())
    one_step = batch_to_uint8(one_step_px)
    truth = eval_set.truth
    metrics = {
        "psnr": float(per_frame(psnr_capped, truth, generated).mean()),
        "ssim": float(per_frame(ssim, truth, generated).mean()),
        "psnr_one_step": float(per_frame(psnr_capped, truth, one_step).mean()),
        "context_tokens": context.num_tokens if context is not None else 0,
    }
    if features is not None:
        true_f, history_f = eval_set.reference_features(features)
        gen_f = features(generated)
        metrics["feature_to_truth"] = float(F.cosine_similarity(gen_f, true_f, dim=1).mean())
        gen_w = F.normalize(gen_f.reshape(b, eval_set.segment, -1), dim=2)  # (B, segment, F)
        metrics["feature_to_history"] = float((gen_w @ F.normalize(history_f, dim=1)[:, :, None]).mean())
    if lpips is not None:
        from tinyhistory.eval.lpips import uint8_to_lpips_input

        metrics["lpips"] = float(lpips(uint8_to_lpips_input(truth), uint8_to_lpips_input(generated)).mean())
    return metrics, generated


@torch.no_grad()
def reference_metrics(eval_set: NextSegmentSet, codec, rates: list) -> dict[str, dict[str, float]]:
    """Predictors of the next segment that only copy the history, scored like a model (PSNR, SSIM):

    * ``last_frame_held``: the last true history frame, repeated for the whole segment — what a sliding window that
      copies reaches with no motion model;
    * ``lr_input_{rate}_held``: the last temporal block of the LR branch's input at ``rate`` (the history pixels
      downsampled and encoded, as the encoder receives them), decoded, bilinearly upsampled and held — what a model
      that reads only its LR tokens could copy (each latent decoded alone: exact for a framewise codec);
    * ``history_mean_held``: the mean of the history frames, held (the window's average colour layout).
    """
    h, n = eval_set.history_frames, eval_set.segment
    history_px = eval_set.pixels[:, :, :h]  # (B, 3, h, H, W)
    size = tuple(history_px.shape[-2:])
    held = {
        "last_frame_held": history_px[:, :, -1:],
        "history_mean_held": history_px.mean(2, keepdim=True),
    }
    for rate in rates:
        lr = lowres_latents(history_px, rate, codec)[:, :, -1:]  # (B, C, 1, h/r, w/r)
        small = codec.decode(lr)[:, :, -1]  # (B, 3, H/rH, W/rW)
        up = F.interpolate(small.float(), size=size, mode="bilinear", align_corners=False)
        held[f"lr_input_{rate}_held"] = up[:, :, None]
    truth = eval_set.truth
    out = {}
    for name, frames in held.items():
        predicted = batch_to_uint8(frames.expand(-1, -1, n, -1, -1))  # B·n frames, clamped to [-1, 1]
        out[name] = {
            "psnr": float(per_frame(psnr_capped, truth, predicted).mean()),
            "ssim": float(per_frame(ssim, truth, predicted).mean()),
        }
    return out
