"""Frame-query evaluation (stage I, the paper's Table 1 protocol at small scale).

For each held-out window (evenly spaced, fixed) and a fixed-seed Ω (``queries`` frames per window), the history is
masked exactly as in training and the model reconstructs the queried frames from the compressed context:

* ``heldout_loss``: flow loss at fixed timesteps and noise;
* ``psnr`` / ``ssim``: frames sampled with the Euler flow sampler from fixed noise;
* ``psnr_one_step``: the one-step estimate from pure noise, ``x0 = ε − v(ε, t=1)`` (the model's mean guess);

Trivial references on the very same frames: the average training frame, and the true frame's 8×8 and 16×16
thumbnails upsampled (ceilings a low-resolution memory could reach).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from tinyhistory.data.clip import WindowSampler, to_uint8
from tinyhistory.eval.lpips import uint8_to_lpips_input
from tinyhistory.eval.metrics import mean_metric, psnr, ssim
from tinyhistory.flow import add_noise, euler_sample, velocity_target
from tinyhistory.train.objectives import FrameQueryBatch, make_frame_query_batch


@dataclass
class FrameQuerySet:
    """The fixed evaluation set: one masked history and Ω per window, plus fixed noise."""

    batch: FrameQueryBatch
    pixels: torch.Tensor  # (B, 3, T, H, W) true pixels of the windows


def build_eval_set(sampler: WindowSampler, windows: int, queries: int, mask_low: float, seed: int = 0) -> FrameQuerySet:
    generator = torch.Generator().manual_seed(seed)
    px, hr, lr = sampler.window(sampler.fixed_starts(windows))
    batch = make_frame_query_batch(hr, lr, sampler.rates, queries, mask_low, 1.0, generator, num_queries=queries)
    return FrameQuerySet(batch, px)


def queried_pixels(eval_set: FrameQuerySet) -> torch.Tensor:
    """True pixels of the queried frames ``(B, 3, k, H, W)``."""
    px, omega = eval_set.pixels, eval_set.batch.omega
    b, c, _, h, w = px.shape
    return px.gather(2, omega[:, None, :, None, None].expand(b, c, omega.shape[1], h, w))


def _frames(pixels: torch.Tensor) -> np.ndarray:
    """``(B, 3, k, H, W)`` → ``(B·k, H, W, 3)`` uint8."""
    return np.concatenate([to_uint8(p) for p in pixels])


@torch.no_grad()
def evaluate_method(
    model, eval_set: FrameQuerySet, text: torch.Tensor, codec, sample_steps: int = 20, chunk: int = 8, lpips=None
):
    """Metrics of one model on the fixed set; returns (metrics dict, sampled pixels ``(B, 3, k, H, W)``).

    ``lpips``: an :class:`~tinyhistory.eval.lpips.LPIPS` model to add LPIPS of the sampled frames (optional).
    """
    model.eval()
    batch = eval_set.batch
    losses, samples, one_steps = [], [], []
    for i in range(0, batch.targets.shape[0], chunk):
        sl = slice(i, i + chunk)
        hist_lr = [x[sl] if x is not None else None for x in batch.history_lr]
        context = model.encode_history(batch.history[sl], hist_lr)
        txt = text.expand(batch.targets[sl].shape[0], -1, -1)
        omega = batch.omega[sl]
        x_t = add_noise(batch.targets[sl], batch.noise[sl], batch.t[sl])
        pred = model(x_t, batch.t[sl], txt, context, omega)
        target = velocity_target(batch.targets[sl], batch.noise[sl])
        losses.append(F.mse_loss(pred, target, reduction="none").mean(dim=(1, 2, 3, 4)))
        noise = batch.noise[sl]
        ones = torch.ones(noise.shape[0])
        one_steps.append(noise - model(noise, ones, txt, context, omega))

        def velocity(x, t, context=context, txt=txt, omega=omega):
            return model(x, t, txt, context, omega)

        samples.append(euler_sample(velocity, noise, sample_steps))
    true = _frames(queried_pixels(eval_set))
    sampled_px = codec.decode(torch.cat(samples))
    sampled = _frames(sampled_px)
    one_step = _frames(codec.decode(torch.cat(one_steps)))
    metrics = {
        "heldout_loss": float(torch.cat(losses).mean()),
        "psnr": mean_metric(psnr, true, sampled),
        "ssim": mean_metric(ssim, true, sampled),
        "psnr_one_step": mean_metric(psnr, true, one_step),
        "ssim_one_step": mean_metric(ssim, true, one_step),
    }
    if lpips is not None:
        metrics["lpips"] = float(lpips(uint8_to_lpips_input(true), uint8_to_lpips_input(sampled)).mean())
    return metrics, sampled_px


def reference_metrics(eval_set: FrameQuerySet, train_pixels: torch.Tensor) -> dict:
    """Trivial references on the queried frames: average training frame; 8×8 and 16×16 thumbnails upsampled."""
    truth = queried_pixels(eval_set)  # (B, 3, k, H, W)
    true = _frames(truth)
    b, c, k, h, w = truth.shape
    mean_frame = train_pixels.mean(dim=1)  # (3, H, W)
    average = _frames(mean_frame[None, :, None].expand(b, c, k, h, w))
    out = {
        "average_training_frame": {"psnr": mean_metric(psnr, true, average), "ssim": mean_metric(ssim, true, average)}
    }
    flat = truth.transpose(1, 2).reshape(b * k, c, h, w)
    for size in (8, 16):
        thumb = F.interpolate(F.adaptive_avg_pool2d(flat, size), size=(h, w), mode="bilinear", align_corners=False)
        frames = _frames(thumb.reshape(b, k, c, h, w).transpose(1, 2))
        out[f"thumbnail_{size}x{size}_upsampled"] = {
            "psnr": mean_metric(psnr, true, frames),
            "ssim": mean_metric(ssim, true, frames),
        }
    return out
