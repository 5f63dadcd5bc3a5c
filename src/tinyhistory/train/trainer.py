"""The training loop (Accelerate). Readable top to bottom; the objective lives in ``objectives.py``.

    tinyhistory train --stage frame-query --preset tiny --out runs/proposed

Writes ``OUT/config.json``, ``OUT/train_log.jsonl`` (loss every ``log_every`` steps, held-out loss at every
checkpoint), ``OUT/last/`` (weights + training state, every ``checkpoint_every`` steps, atomic) and ``OUT/final/``.
Running the same command again resumes from ``OUT/last`` exactly (weights, optimizer, scheduler, RNG, step).
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from tinyhistory.config import RunConfig
from tinyhistory.data.clip import WindowSampler, load_clip, load_extra_training, resolve_video
from tinyhistory.geometry import Rate
from tinyhistory.system import HistoryDiT, build_codec
from tinyhistory.text.cache import encode_prompts
from tinyhistory.train.checkpoint import load_model, load_training_state, save_training_state, save_weights
from tinyhistory.train.objectives import frame_query_loss, make_frame_query_batch


def lr_lambda(cfg: RunConfig):
    """Linear warm-up, then cosine decay to ``min_lr_ratio`` of the peak at the last step."""
    tc = cfg.train

    def factor(step: int) -> float:
        if step < tc.warmup_steps:
            return (step + 1) / tc.warmup_steps
        progress = min(1.0, (step - tc.warmup_steps) / max(1, tc.steps - tc.warmup_steps))
        return tc.min_lr_ratio + (1 - tc.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def make_samplers(cfg: RunConfig, model: HistoryDiT) -> tuple[WindowSampler, WindowSampler]:
    clip = load_clip(resolve_video(cfg.data.video), cfg.data.fps, cfg.data.size, cfg.data.heldout_fraction)
    codec = build_codec(cfg)
    rates = [Rate.parse(r) for r in cfg.history.rates] if len(model.producers) else []
    uses_lr = [bool(getattr(p, "uses_lr", False)) for p in model.producers]
    frames = cfg.train.history_frames
    extra = load_extra_training(cfg.data.extra_train_videos, cfg.data.fps, cfg.data.size)
    return (
        WindowSampler([clip.train, *extra], frames, codec, rates, uses_lr),
        WindowSampler(clip.heldout, frames, codec, rates, uses_lr),
    )


@torch.no_grad()
def heldout_loss(
    model: HistoryDiT, cfg: RunConfig, sampler: WindowSampler, text: torch.Tensor, windows: int = 16
) -> float:
    """Frame-query flow loss on fixed held-out windows with fixed Ω, masks, noise and timesteps."""
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(1234)
    losses = []
    for start in sampler.fixed_starts(windows).split(cfg.train.batch_size):
        _, hr, lr = sampler.window(start)
        batch = make_frame_query_batch(
            hr, lr, sampler.rates, cfg.train.query_window, cfg.train.mask_low, cfg.train.timestep_shift, generator
        )
        batch = _to(batch, device)
        text_batch = text.to(device).expand(len(start), -1, -1)
        losses.append(frame_query_loss(model, batch, text_batch).item() * len(start))
    model.train()
    return sum(losses) / windows


def train(
    cfg: RunConfig,
    out_dir: str | Path,
    init_from: str | Path | None = None,
    progress: bool = True,
    save_dtype: torch.dtype | None = None,
    stop_after: int | None = None,
) -> dict:
    """Run (or resume) stage-I frame-query training; returns a summary dict (also in ``OUT/summary.json``).

    ``stop_after``: leave after this many steps *in this invocation* (time-boxed jobs), with a checkpoint in
    ``OUT/last``; running again resumes exactly. The schedule always follows ``train.steps``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tc = cfg.train
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    torch.manual_seed(tc.seed)

    if init_from is not None:
        # The architecture is the checkpoint's; the rest of the config (data, schedule) is this run's.
        model, init_cfg = load_model(init_from)
        cfg = dataclasses.replace(
            cfg, base=init_cfg.base, codec=init_cfg.codec, backbone=init_cfg.backbone, history=init_cfg.history
        )
        tc = cfg.train
    else:
        model = HistoryDiT.from_config(cfg)
    train_sampler, heldout_sampler = make_samplers(cfg, model)
    text = encode_prompts(cfg.text, [cfg.text.caption])  # (1, L, 384)

    groups = [{"params": list(model.backbone.parameters()), "lr": tc.learning_rate}]
    if len(model.producers):
        groups.append({"params": list(model.producers.parameters()), "lr": tc.encoder_learning_rate})
    optimizer = torch.optim.AdamW(groups, weight_decay=tc.weight_decay, betas=(0.9, 0.99))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    device = accelerator.device
    text = text.to(device)

    generator = torch.Generator().manual_seed(tc.seed)
    step = 0
    last = _resumable_checkpoint(out)
    if last is not None:
        unwrapped, _ = load_model(last)
        accelerator.unwrap_model(model).load_state_dict(unwrapped.state_dict())
        step = load_training_state(last, optimizer, scheduler, generator)
        accelerator.print(f"resumed from {last} at step {step}")
    cfg.save(out / "config.json")

    log_path = out / "train_log.jsonl"
    log = open(log_path, "a")
    model.train()
    start_time, start_step = time.time(), step
    bar = tqdm(total=tc.steps, initial=step, disable=not progress or not accelerator.is_main_process, desc="stage I")
    end = tc.steps if stop_after is None else min(tc.steps, step + stop_after)
    while step < end:
        _, hr, lr = train_sampler.sample(tc.batch_size, generator)
        batch = make_frame_query_batch(
            hr, lr, train_sampler.rates, tc.query_window, tc.mask_low, tc.timestep_shift, generator
        )
        batch = _to(batch, device)
        loss = frame_query_loss(model, batch, text.expand(tc.batch_size, -1, -1))
        accelerator.backward(loss)
        if tc.grad_clip > 0:
            accelerator.clip_grad_norm_(model.parameters(), tc.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        bar.update(1)
        if step % tc.log_every == 0 or step == tc.steps:
            record = {
                "step": step,
                "loss": round(loss.item(), 6),
                "lr": scheduler.get_last_lr()[0],
                "steps_per_s": round((step - start_step) / (time.time() - start_time), 3),
            }
            bar.set_postfix(loss=f"{record['loss']:.4f}")
            log.write(json.dumps(record) + "\n")
            log.flush()
        if step % tc.checkpoint_every == 0 or step == end:
            h = heldout_loss(accelerator.unwrap_model(model), cfg, heldout_sampler, text)
            log.write(json.dumps({"step": step, "heldout_loss": round(h, 6)}) + "\n")
            log.flush()
            if accelerator.is_main_process:
                _atomic_checkpoint(out, accelerator.unwrap_model(model), cfg, optimizer, scheduler, step, generator)
    bar.close()
    log.close()
    if step < tc.steps:
        accelerator.print(f"stopped at step {step} of {tc.steps}; run the same command again to resume")
        return {"method": cfg.history.method, "rates": cfg.history.rates, "steps": step, "final": None}

    final = out / "final"
    if accelerator.is_main_process:
        save_weights(accelerator.unwrap_model(model), cfg, final, dtype=save_dtype)
    summary = {
        "method": cfg.history.method,
        "rates": cfg.history.rates,
        "steps": step,
        "heldout_loss": heldout_loss(accelerator.unwrap_model(model), cfg, heldout_sampler, text),
        "final": str(final),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _resumable_checkpoint(out: Path) -> Path | None:
    """``OUT/last``, or ``OUT/last.old`` when a run died between the two renames of :func:`_atomic_checkpoint`."""
    for candidate in (out / "last", out / "last.old"):
        if (candidate / "state" / "trainer.json").is_file():
            return candidate
    return None


def _atomic_checkpoint(out: Path, model, cfg, optimizer, scheduler, step, generator) -> None:
    """Write ``last.tmp`` completely, then swap it in, so an interrupted write never leaves a half checkpoint."""
    tmp = out / "last.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save_weights(model, cfg, tmp)
    save_training_state(tmp, optimizer, scheduler, step, generator)
    last = out / "last"
    old = out / "last.old"
    shutil.rmtree(old, ignore_errors=True)
    if last.exists():
        last.rename(old)
    tmp.rename(last)
    shutil.rmtree(old, ignore_errors=True)


def _to(batch, device):
    if device.type == "cpu":
        return batch
    for name in ("history", "omega", "targets", "noise", "t", "mask_levels"):
        setattr(batch, name, getattr(batch, name).to(device))
    batch.history_lr = [x.to(device) if x is not None else None for x in batch.history_lr]
    return batch
