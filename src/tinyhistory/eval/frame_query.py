"""Frame-query evaluation (stage I, the paper's Table 1 protocol at small scale).

For each held-out window (evenly spaced, fixed) and a fixed-seed Ω (``queries`` frames per window), the history is
masked exactly as in training and the model reconstructs the queried frames from the compressed context:

* ``heldout_loss``: flow loss at fixed timesteps and noise;
* ``psnr`` / ``ssim``: frames sampled with the Euler flow sampler from fixed noise;
* ``psnr_one_step``: the one-step estimate from pure noise, ``x0 = ε − v(ε, t=1)`` (the model's mean guess);

Every PSNR is floored at 8-bit rounding (58.9 dB, :func:`~tinyhistory.eval.metrics.psnr_capped`): a thumbnail of a
black frame (Big Buck Bunny has them at its cuts) is exact, and one ``inf`` made the mean ``inf``.

Trivial references on the very same frames: the average training frame, and the true frame's 8×8 and 16×16
thumbnails upsampled (ceilings a low-resolution memory could reach); each LR branch's own input upsampled (what
copying it reaches: a *mean* guess), and that input with another window's real detail added (what a *sample* that
reads its input perfectly but invents its own detail reaches: :func:`with_foreign_detail`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from tinyhistory.assemble import build_codec
from tinyhistory.codecs.base import Codec
from tinyhistory.data.windows import WindowSampler, batch_to_uint8
from tinyhistory.eval.lpips import uint8_to_lpips_input
from tinyhistory.eval.metrics import mean_metric, per_frame, psnr_capped, ssim
from tinyhistory.flow import add_noise, euler_sample, velocity_target
from tinyhistory.geometry import Rate, context_report, get_base
from tinyhistory.text.condition import TextCondition
from tinyhistory.train.objectives import FrameQueryBatch, make_frame_query_batch

if TYPE_CHECKING:
    from tinyhistory.config import CodecConfig, DataConfig, TrainConfig


@dataclass
class FrameQuerySet:
    """The fixed evaluation set: one masked history and Ω per window, plus fixed noise."""

    batch: FrameQueryBatch
    pixels: torch.Tensor  # (B, 3, T, H, W) true pixels of the windows
    starts: list[int]  # first frame of each window in the evaluated clip


def build_eval_set(sampler: WindowSampler, windows: int, queries: int, mask_low: float, seed: int = 0) -> FrameQuerySet:
    generator = torch.Generator().manual_seed(seed)
    starts = sampler.fixed_starts(windows)
    px, hr, lr = sampler.window(starts)
    batch = make_frame_query_batch(hr, lr, sampler.rates, queries, mask_low, 1.0, generator, num_queries=queries)
    return FrameQuerySet(batch, px, starts.tolist())


def eval_set_for_clip(
    pixels: torch.Tensor,
    codec: CodecConfig,
    rates: list[str],
    train: TrainConfig,
    windows: int,
    queries: int,
    seed: int = 0,
) -> tuple[FrameQuerySet, Codec]:
    """The fixed set for a ``(3, T, H, W)`` clip: windows of ``train.history_frames`` frames through the ``[codec]``
    table's codec, LR latents for every one of ``rates`` (``history.rates``, or the union of the compared models'),
    masked as training masks (``train.mask_low``); returns it and the codec.

    LR latents are built for every rate whatever the method, so every method is scored on identical inputs.
    """
    built = build_codec(codec)
    parsed = [Rate.parse(r) for r in rates]
    sampler = WindowSampler(pixels, train.history_frames, built, parsed, [True] * len(parsed))
    return build_eval_set(sampler, windows, queries, train.mask_low, seed), built


def context_size(base: str, data: DataConfig, rates: list[str], method: str, frames: int) -> tuple[int, float]:
    """(context tokens for a history of ``frames`` frames, nominal tokens per second) of a model of geometry ``base``
    on the ``[data]`` table's square frames (``data.size``) at ``data.fps``."""
    if method == "no_history":
        return 0, 0.0
    report = context_report(
        get_base(base),
        data.size,
        data.size,
        data.fps,
        frames / data.fps,
        [Rate.parse(r) for r in rates],
    )
    return report.history_tokens, report.history_tokens_per_second


def queried_pixels(eval_set: FrameQuerySet) -> torch.Tensor:
    """True pixels of the queried frames ``(B, 3, k, H, W)``."""
    px, omega = eval_set.pixels, eval_set.batch.omega
    b, c, _, h, w = px.shape
    return px.gather(2, omega[:, None, :, None, None].expand(b, c, omega.shape[1], h, w))


def loss_timesteps(count: int = 8) -> torch.Tensor:
    """Quantiles of the (unshifted) logit-normal: a fixed grid whose mean loss estimates the training loss."""
    q = (torch.arange(count, dtype=torch.float64) + 0.5) / count
    return torch.sigmoid(torch.special.ndtri(q)).float()


@torch.no_grad()
def evaluate_method(
    model,
    eval_set: FrameQuerySet,
    text: TextCondition,
    codec,
    sample_steps: int = 20,
    chunk: int = 8,
    lpips=None,
    one_step_pixels: bool = False,
):
    """Metrics of one model on the fixed set; returns (metrics dict, sampled pixels ``(B, 3, k, H, W)``), and with
    ``one_step_pixels`` the one-step mean guesses' pixels (same shape) third.

    ``heldout_loss`` averages the flow loss over the fixed timestep grid of :func:`loss_timesteps` with fixed noise.
    ``lpips``: an :class:`~tinyhistory.eval.lpips.LPIPS` model to add LPIPS of the sampled frames (optional).
    Per-window values are in ``metrics["per_window"]``.
    """
    model.eval()
    device = next(model.parameters()).device  # the set lives on the CPU; chunks visit the model's device
    batch = eval_set.batch
    grid = loss_timesteps().to(device)
    losses, samples, one_steps = [], [], []
    for i in range(0, batch.targets.shape[0], chunk):
        sl = slice(i, i + chunk)
        hist_lr = [x[sl].to(device) if x is not None else None for x in batch.history_lr]
        context = model.encode_history(batch.history[sl].to(device), hist_lr)
        targets, noise, omega = (x[sl].to(device) for x in (batch.targets, batch.noise, batch.omega))
        txt = text.to(device).expand(targets.shape[0])
        target_v = velocity_target(targets, noise)
        per_t = []
        for t_value in grid:
            t = t_value.expand(targets.shape[0])
            pred = model(add_noise(targets, noise, t), t, txt, context, omega)
            per_t.append(F.mse_loss(pred, target_v, reduction="none").mean(dim=(1, 2, 3, 4)))
        losses.append(torch.stack(per_t).mean(0).cpu())
        one_steps.append((noise - model(noise, torch.ones(noise.shape[0], device=device), txt, context, omega)).cpu())

        def velocity(x, t, context=context, txt=txt, omega=omega):
            return model(x, t, txt, context, omega)

        samples.append(euler_sample(velocity, noise, sample_steps).cpu())
    windows, k = batch.omega.shape
    true = batch_to_uint8(queried_pixels(eval_set))
    sampled_px = codec.decode(torch.cat(samples))
    sampled = batch_to_uint8(sampled_px)
    one_step_px = codec.decode(torch.cat(one_steps))
    one_step = batch_to_uint8(one_step_px)
    frame_psnr = per_frame(psnr_capped, true, sampled).reshape(windows, k)
    frame_ssim = per_frame(ssim, true, sampled).reshape(windows, k)
    window_loss = torch.cat(losses)
    metrics = {
        "heldout_loss": float(window_loss.mean()),
        "psnr": float(frame_psnr.mean()),
        "ssim": float(frame_ssim.mean()),
        "psnr_one_step": mean_metric(psnr_capped, true, one_step),
        "ssim_one_step": mean_metric(ssim, true, one_step),
    }
    frame_lpips = None
    if lpips is not None:
        frame_lpips = lpips(uint8_to_lpips_input(true), uint8_to_lpips_input(sampled)).numpy().reshape(windows, k)
        metrics["lpips"] = float(frame_lpips.mean())
    metrics["per_window"] = [
        {
            "start": eval_set.starts[w],
            "queries": batch.omega[w].tolist(),
            "heldout_loss": float(window_loss[w]),
            "psnr": float(frame_psnr[w].mean()),
            "psnr_per_query": [float(v) for v in frame_psnr[w]],  # in the order of "queries"
            "ssim": float(frame_ssim[w].mean()),
            **({"lpips": float(frame_lpips[w].mean())} if frame_lpips is not None else {}),
        }
        for w in range(windows)
    ]
    return (metrics, sampled_px, one_step_px) if one_step_pixels else (metrics, sampled_px)


def _as_frames(x: torch.Tensor) -> torch.Tensor:
    """A ``(B, 3, k, H, W)`` video as ``(B·k, 3, H, W)`` frames (2-D pooling works per frame)."""
    return x.transpose(1, 2).reshape(-1, x.shape[1], *x.shape[-2:])


def reference_frames(
    eval_set: FrameQuerySet, train_pixels: torch.Tensor, codec=None, rates: list[str] | tuple[str, ...] = ()
) -> dict[str, torch.Tensor]:
    """The trivial references' frames ``(B, 3, k, H, W)`` in [-1, 1] for the queried frames, by name: the average
    training frame; 8×8 and 16×16 thumbnails upsampled; for each of ``rates`` (the set's LR latents, in order), what
    that LR branch hands the DiT, upsampled (:func:`lr_input_frames`: a model with that branch could copy it), and
    that with another window's detail; given a lossy ``codec``, its reconstruction of the true frames (the ceiling of
    any model that paints through it; a lossless codec's is exact and left out)."""
    truth = queried_pixels(eval_set)  # (B, 3, k, H, W)
    b, c, k, h, w = truth.shape
    mean_frame = train_pixels.mean(dim=1)  # (3, H, W)
    out = {"average_training_frame": mean_frame[None, :, None].expand(b, c, k, h, w)}
    flat = _as_frames(truth)  # (B·k, 3, H, W)
    for size in (8, 16):
        thumb = F.interpolate(F.adaptive_avg_pool2d(flat, size), size=(h, w), mode="bilinear", align_corners=False)
        out[f"thumbnail_{size}x{size}_upsampled"] = thumb.reshape(b, k, c, h, w).transpose(1, 2)
    if rates and codec is None:
        raise ValueError("the LR-input references need the codec that made the set's LR latents")
    for index, rate in enumerate(rates):
        upsampled = lr_input_frames(eval_set, index, Rate.parse(rate), codec)
        out[f"lr_input_{rate}_upsampled"] = upsampled
        if b > 1:  # another window's detail needs another window
            out[f"lr_input_{rate}_with_foreign_detail"] = with_foreign_detail(truth, upsampled)
    if codec is not None:
        recon = codec.decode(codec.encode(truth))
        if not np.array_equal(batch_to_uint8(recon), batch_to_uint8(truth)):
            out["codec_reconstruction"] = recon
    return out


def reference_metrics(
    eval_set: FrameQuerySet, train_pixels: torch.Tensor, codec=None, rates: list[str] | tuple[str, ...] = ()
) -> dict:
    """PSNR and SSIM of each of :func:`reference_frames` on the queried frames."""
    return score_references(queried_pixels(eval_set), reference_frames(eval_set, train_pixels, codec, rates))


def score_references(truth: torch.Tensor, frames: dict[str, torch.Tensor]) -> dict:
    """PSNR and SSIM of each named reference ``(B, 3, k, H, W)`` against ``truth``."""
    true = batch_to_uint8(truth)
    return {name: _scores(true, batch_to_uint8(f)) for name, f in frames.items()}


def _scores(true: np.ndarray, frames: np.ndarray) -> dict[str, float]:
    """Mean PSNR (floored) and SSIM of aligned uint8 frame stacks ``(N, H, W, 3)``."""
    return {"psnr": mean_metric(psnr_capped, true, frames), "ssim": mean_metric(ssim, true, frames)}


def with_foreign_detail(truth: torch.Tensor, upsampled: torch.Tensor) -> torch.Tensor:
    """Each queried frame's LR input (``upsampled``) plus the detail the LR input lacks *of another window's frame*
    (``truth − upsampled`` of the window half the set away, cyclically: evenly spaced windows, so another part of
    the clip): ``(B, 3, k, H, W)`` in [-1, 1].

    Why: PSNR scores a sample and a mean guess differently. The LR input upsampled is a mean guess: it leaves out
    the detail it cannot know, and pays that detail's energy ``D`` once. A sampler paints detail of the right
    statistics that it cannot know either, and pays ``D`` twice (its own detail plus the true one, uncorrelated), so
    a sample that reads its input *perfectly* scores about 3 dB under the LR input (``10·log10 2``). This row is such
    a sample, built from real frames: the reference a sampled frame query should be held against (the one-step
    mean guess is the one to hold against the LR input itself). Neighbouring windows often share a shot and so some
    detail, which would flatter it: hence half the set away.
    """
    if truth.shape[0] < 2:
        raise ValueError("another window's detail needs at least two windows, got one")
    detail = truth - upsampled  # (B, 3, k, H, W) what the LR input misses
    return (upsampled + detail.roll(truth.shape[0] // 2, dims=0)).clamp(-1.0, 1.0)


def psnr_by_scale(truth: torch.Tensor, other: torch.Tensor, sizes: list[int]) -> dict[int, float]:
    """Mean per-frame PSNR (dB, peak 255 as the frame metrics) of two ``(B, 3, k, H, W)`` videos in [-1, 1], both
    area-averaged to s×s pixels, per s."""

    def frames(x: torch.Tensor) -> torch.Tensor:  # (B·k, 3, H, W) in [0, 1]: the uint8 frames the metrics see
        return torch.from_numpy(batch_to_uint8(x)).permute(0, 3, 1, 2).float().div(255)

    flat_t, flat_o = frames(truth), frames(other)
    out = {}
    for size in sizes:
        mse = (F.adaptive_avg_pool2d(flat_t, size) - F.adaptive_avg_pool2d(flat_o, size)).pow(2).mean(dim=(1, 2, 3))
        out[size] = float((10 * torch.log10(1.0 / mse.clamp_min(1e-10))).mean())
    return out


READOUT_SOURCES = ("right token", "frame mean", "history mean")


def coarse_readout_fit(
    mean_guess: torch.Tensor, lr_input: torch.Tensor, window_pixels: torch.Tensor, average: torch.Tensor, size: int
) -> dict[str, float]:
    """Where a mean guess's coarse picture comes from: least squares of ``mean_guess − average`` on three sources,
    all area-averaged to ``size``×``size`` pixels (issue 22's 2×2 readout gap).

    * ``right token``: the LR input of the queried frame (what the model should copy);
    * ``frame mean``: that input's spatial mean over the frame (attention smeared over the frame's tokens);
    * ``history mean``: the window's mean frame (attention smeared over the history's times).

    Each source enters as its deviation from ``average`` (the average training frame, the unconditional guess), so the
    weights say which share of each the guess carries; ``1 − Σ`` is shrinkage toward the average. Also ``slope``
    (the right token's weight alone) and ``r2`` (the share of the guess's deviation the three explain; the rest is
    neither copying nor smearing: misplacement or invention). ``mean_guess``, ``lr_input``: ``(B, 3, k, H, W)``;
    ``window_pixels``: ``(B, 3, T, H, W)``; ``average``: broadcastable to ``(B, 3, k, H, W)``; all in [-1, 1].
    """
    b, c, k, h, w = mean_guess.shape
    average = average.expand(b, c, k, h, w)

    def pooled(x: torch.Tensor) -> torch.Tensor:  # (B, 3, k, H, W) → (B, 3, k, size, size)
        frames = F.adaptive_avg_pool2d(_as_frames(x).double(), size)
        return frames.reshape(b, x.shape[2], c, size, size).transpose(1, 2)

    mu = pooled(average)
    right = pooled(lr_input)
    sources = [
        right - mu,
        right.mean(dim=(-2, -1), keepdim=True).expand_as(right) - mu,
        pooled(window_pixels).mean(dim=2, keepdim=True).expand_as(right) - mu,
    ]
    y = (pooled(mean_guess) - mu).flatten()
    x = torch.stack([src.flatten() for src in sources], dim=1)  # (N, 3)
    weights = torch.linalg.lstsq(x, y[:, None]).solution[:, 0]
    residual = y - x @ weights
    slope = float((x[:, 0] @ y) / (x[:, 0] @ x[:, 0]))
    fit = {name: float(v) for name, v in zip(READOUT_SOURCES, weights, strict=True)}
    return fit | {"slope": slope, "r2": float(1 - residual.pow(2).sum() / y.pow(2).sum())}


def band_fit(mean_guess: torch.Tensor, lr_input: torch.Tensor, size: int) -> dict[str, float]:
    """How much of the LR input's detail in one octave a mean guess copies: both ``(B, 3, k, H, W)`` videos
    area-averaged to ``size``×``size`` less their own ``size/2`` average upsampled (nearest), the content that
    appears between the two scales; ``slope``: the input's band regressed onto the guess's (1: copied, below 1:
    shrunk toward flat); ``r2``: the share of the guess's band that copy explains (the rest is invented or
    misplaced); ``energy``: the guess's band energy over the input's.

    :func:`coarse_readout_fit` at a fine scale is dominated by the coarse content that scale still holds; a band
    isolates the detail inside a history token (at 128 px a 4×4×2 token covers 32×32 pixels: the bands at 8 and 16).
    """
    if size < 2 or size % 2:
        raise ValueError(f"a band needs an even size ≥ 2 (its half is the coarser scale), got {size}")

    def band(x: torch.Tensor) -> torch.Tensor:  # (B·k·3·size·size,) the octave's content
        frames = _as_frames(x).double()
        fine = F.adaptive_avg_pool2d(frames, size)
        coarse = F.interpolate(F.adaptive_avg_pool2d(frames, size // 2), size=size, mode="nearest")
        return (fine - coarse).flatten()

    y, x = band(mean_guess), band(lr_input)
    slope = (x @ y) / (x @ x)
    return {
        "slope": float(slope),
        "r2": float(1 - (y - slope * x).pow(2).sum() / y.pow(2).sum().clamp_min(1e-30)),
        "energy": float(y.pow(2).sum() / x.pow(2).sum()),
    }


def lr_input_frames(eval_set: FrameQuerySet, index: int, rate: Rate, codec: Codec) -> torch.Tensor:
    """What LR branch ``index`` (of ``rate``) hands the DiT for each queried frame, as pixels: the LR latent of the
    temporal block holding the frame (clean: the mask spares it), decoded and bilinearly upsampled to full size.

    A reference for models with that LR branch: copying their own input would reach it. Each latent is decoded on its
    own — exact for a framewise codec; a causal VAE decodes a lone latent as a first frame (an approximation).
    ``(B, 3, k, H, W)`` in [-1, 1].
    """
    lr = eval_set.batch.history_lr[index]  # (B, C, T/rT, h, w)
    omega = eval_set.batch.omega // rate.t  # (B, k) the LR latent of each queried frame's block
    b, c, _, h, w = lr.shape
    k = omega.shape[1]
    picked = lr.gather(2, omega[:, None, :, None, None].expand(b, c, k, h, w))  # (B, C, k, h, w)
    lone = picked.transpose(1, 2).reshape(b * k, c, 1, h, w)
    pixels = codec.decode(lone)[:, :, 0]  # (B·k, 3, H/r, W/r)
    size = tuple(eval_set.pixels.shape[-2:])
    up = F.interpolate(pixels, size=size, mode="bilinear", align_corners=False)
    return up.reshape(b, k, 3, *size).transpose(1, 2)


def frame_query_report(
    checkpoint: str | Path, video: str | Path, out: str | Path, windows: int = 24, queries: int = 2, seed: int = 0
) -> dict:
    """The frame-query protocol on any video for one checkpoint: ``OUT/frame_query.json`` and ``.md``.

    The video is decoded at the checkpoint's fps and size; ``windows`` evenly spaced windows of the checkpoint's
    history length, ``queries`` fixed-seed query frames each.
    """
    from tinyhistory.data.video import decode_video
    from tinyhistory.data.windows import to_pixels
    from tinyhistory.eval.lpips import LPIPS
    from tinyhistory.text.cache import encode_prompts
    from tinyhistory.train.checkpoint import load_model

    model, cfg = load_model(checkpoint)
    pixels = to_pixels(decode_video(video, fps=cfg.data.fps, size=cfg.data.size))
    eval_set, codec = eval_set_for_clip(pixels, cfg.codec, cfg.history.rates, cfg.train, windows, queries, seed)
    text = encode_prompts(cfg.text, [cfg.text.caption])
    metrics, sampled = evaluate_method(model, eval_set, text, codec, lpips=LPIPS("alex"))
    # The demo's reference rows, so a checkpoint can be judged on one's own footage: the average frame (here of the
    # evaluated video itself), thumbnails, each LR branch's own input upsampled (what copying it would reach) and the
    # codec's reconstruction (the ceiling); and every row's PSNR by scale, where a model that knows the layout but
    # cannot paint inside a history block stays high at small scales and falls towards the average frame.
    frames = reference_frames(eval_set, pixels, codec, cfg.history.rates)  # each decoded once, scored twice
    truth = queried_pixels(eval_set)
    references = score_references(truth, frames)
    sizes = [s for s in (2, 4, 8, 16, 32, 64, 128, 256) if s < truth.shape[-1]] + [truth.shape[-1]]
    profiles = {"model": psnr_by_scale(truth, sampled, sizes)}
    # the thumbnails are exact at their own scale and below: their profile says nothing
    profiles |= {n: psnr_by_scale(truth, f, sizes) for n, f in frames.items() if not n.startswith("thumbnail")}
    report = {
        "checkpoint": str(checkpoint),
        "video": str(video),
        "method": cfg.history.method,
        **metrics,
        "references": references,
        "psnr_by_scale": {"sizes": sizes, **profiles},
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "frame_query.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"# Frame query: {cfg.history.method} on {Path(video).name}",
        "",
        f"Overall: held-out loss {metrics['heldout_loss']:.4f}, PSNR {metrics['psnr']:.2f}, "
        f"SSIM {metrics['ssim']:.3f}, LPIPS {metrics['lpips']:.3f}",
        "",
        "| reference (same queried frames) | PSNR | SSIM |",
        "|---|---|---|",
    ]
    names = {"average_training_frame": "average frame of this video"}
    lines += [f"| {names.get(n, n)} | {r['psnr']:.2f} | {r['ssim']:.3f} |" for n, r in references.items()]
    lines += [
        "",
        "PSNR by scale (sampled and true frames both area-averaged to s×s pixels):",
        "",
        "| | " + " | ".join(f"{s}×{s}" for s in sizes) + " |",
        "|---|" + "---|" * len(sizes),
    ]
    for name, profile in profiles.items():
        lines.append(f"| {names.get(name, name)} | " + " | ".join(f"{profile[s]:.2f}" for s in sizes) + " |")
    lines += [
        "",
        "| window start | queried frames | loss | PSNR | SSIM | LPIPS |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {w['start']} | {w['queries']} | {w['heldout_loss']:.4f} | {w['psnr']:.2f} | {w['ssim']:.3f} | "
        f"{w['lpips']:.3f} |"
        for w in metrics["per_window"]
    ]
    (out / "frame_query.md").write_text("\n".join(lines) + "\n")
    return report
