"""``tinyhistory codec train``: train the tiny preset's learned codec (:mod:`tinyhistory.codecs.learned`).

The footage is decoded once at the run's fps and size; its last ``heldout_fraction`` is held out and never trained
on (the same split the tiny preset's DiT uses). Each step reconstructs a batch of random training frames (randomly
mirrored) and minimises L1 + ``lpips_weight``·LPIPS (AlexNet, the project's own implementation). AdamW with a
linear warm-up and a cosine decay to 10 %.

A run folder holds ``settings.json``, ``log.jsonl`` and ``last/`` (weights and optimizer state, written every
``checkpoint_every`` steps, every ``checkpoint_minutes`` minutes and on SIGTERM / Ctrl-C); running the same command
again resumes from ``last/`` exactly. ``last/`` is written whole beside the old one (``last.tmp/``) and swapped in by
renames, so a run killed at any moment resumes from weights and optimizer state of one and the same step (written in
place, a kill between the weights and the state would resume a mix of two steps without a word). At the end the
per-channel latent mean and std of the training frames are measured and the codec is written to the run folder
itself (``config.json`` + ``codec.safetensors``, what ``codec.kind = "learned"`` loads), with ``metrics.json``:
held-out PSNR / SSIM / LPIPS of the reconstruction.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from tinyhistory.codecs.learned import (
    AutoencoderConfig,
    FrameAutoencoder,
    LearnedCodec,
    reconstruction_loss,
    save_autoencoder,
)
from tinyhistory.files import read_json, repair_jsonl, replace_file, writing
from tinyhistory.train.checkpoint import load_training_state, save_training_state

# Settings a resumed run may change: where its folder now is, how long, and how often it logs and checkpoints.
RESUMABLE = {"out", "steps", "log_every", "checkpoint_every", "checkpoint_minutes"}


@dataclass
class CodecTrainSettings:
    video: str
    out: str
    fps: float = 8.0
    size: int = 128
    start: float = 0.0
    seconds: float | None = None
    heldout_fraction: float = 0.2
    steps: int = 2000
    batch_size: int = 16
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.0
    lpips_weight: float = 0.5
    latent_channels: int = 16
    channels: tuple[int, ...] = (32, 64, 128)
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 100
    checkpoint_minutes: float = 10.0
    eval_frames: int = 192  # held-out frames scored at the end (evenly spaced)

    def validate(self) -> None:
        for name in ("steps", "batch_size", "latent_channels", "log_every", "checkpoint_every", "eval_frames"):
            if getattr(self, name) <= 0:
                raise ValueError(f"codec train: {name} must be positive, got {getattr(self, name)}")
        if not 0 < self.heldout_fraction < 1:
            raise ValueError(f"codec train: heldout_fraction must be in (0, 1), got {self.heldout_fraction}")
        if self.size % 2 ** len(self.channels):
            raise ValueError(
                f"codec train: size {self.size} is not divisible by the codec's factor {2 ** len(self.channels)}"
            )
        if not (self.learning_rate > 0 and self.lpips_weight >= 0 and self.fps > 0):
            raise ValueError("codec train: learning_rate and fps must be positive and lpips_weight >= 0")


def split_frames(frames: np.ndarray, heldout_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The first ``1 − heldout_fraction`` of the frames train; the tail is held out."""
    cut = int(round(len(frames) * (1 - heldout_fraction)))
    if cut <= 0 or cut >= len(frames):
        raise ValueError(f"{len(frames)} frames leave nothing to train on or to hold out at {heldout_fraction}")
    return frames[:cut], frames[cut:]


def to_batch(frames: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` → float ``(N, 3, H, W)`` in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1


def _lr(step: int, s: CodecTrainSettings) -> float:
    if step < s.warmup_steps:
        return s.learning_rate * (step + 1) / s.warmup_steps
    progress = (step - s.warmup_steps) / max(1, s.steps - s.warmup_steps)
    return s.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _check_resume(s: CodecTrainSettings, out: Path) -> None:
    saved = read_json(out / "settings.json", "codec run's settings")
    if not isinstance(saved, dict):
        raise ValueError(f"{out / 'settings.json'}: not a codec run's settings (expected a JSON object)")
    now = json.loads(json.dumps(asdict(s)))
    changed = sorted(k for k in now if k not in RESUMABLE and now[k] != saved.get(k))
    if changed:
        what = ", ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in changed)
        raise ValueError(f"{out} was trained with other settings ({what}); use another --out, or the same settings")


@torch.no_grad()
def latent_statistics(model: FrameAutoencoder, frames: np.ndarray, batch: int = 64) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the raw latents of ``frames`` (every frame, ``batch`` at a time)."""
    total, total_sq, count = 0.0, 0.0, 0
    for i in range(0, len(frames), batch):
        z = model.encode(to_batch(frames[i : i + batch])).double()  # (N, C, h, w)
        total = total + z.sum(dim=(0, 2, 3))
        total_sq = total_sq + (z * z).sum(dim=(0, 2, 3))
        count += z.shape[0] * z.shape[2] * z.shape[3]
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(1e-12).sqrt()
    return mean.float().tolist(), std.float().tolist()


def evaluate(codec: LearnedCodec, frames: np.ndarray, count: int) -> dict:
    """Held-out reconstruction: PSNR / SSIM (scikit-image) and LPIPS alex on ``count`` evenly spaced frames."""
    from tinyhistory.eval.lpips import LPIPS, uint8_to_lpips_input
    from tinyhistory.eval.metrics import mean_metric, psnr, ssim

    index = np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int)
    reference = frames[index]
    pixels = to_batch(reference).transpose(0, 1)[None]  # (1, 3, N, H, W)
    recon = codec.decode(codec.encode(pixels))[0].transpose(0, 1)  # (N, 3, H, W)
    test = ((recon.permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    with torch.no_grad():
        lpips = LPIPS("alex")(uint8_to_lpips_input(reference), uint8_to_lpips_input(test)).mean().item()
    return {
        "frames": int(len(index)),
        "psnr": mean_metric(psnr, reference, test),
        "ssim": mean_metric(ssim, reference, test),
        "lpips_alex": lpips,
    }


def _save_state(folder: Path, model, optimizer, scheduler, step: int, generator: torch.Generator) -> None:
    save_autoencoder(model, folder)
    save_training_state(folder, optimizer, scheduler, step, [generator.get_state()])


def resumable_checkpoint(out: Path) -> Path | None:
    """``OUT/last``, else ``OUT/last.old`` (a run killed between the two renames of :func:`swap_in_checkpoint`); a
    folder only counts once its training state is there (a ``last.tmp`` never does: it may be half written)."""
    for candidate in (out / "last", out / "last.old"):
        if (candidate / "state" / "trainer.json").is_file():
            return candidate
    return None


def swap_in_checkpoint(last: Path, write: Callable[[Path], None]) -> None:
    """``write(folder)`` into ``last.tmp``, then swap it in for ``last`` by two renames.

    At every moment one whole checkpoint exists under the name :func:`resumable_checkpoint` looks at first: ``last``
    (the new or the old one) or, between the renames, ``last.old``. ``last.old`` is removed only once a ``last``
    replaces it, so a run resumed from ``last.old`` and killed again never loses it. A failed write (full disk) removes
    its ``last.tmp``, which would hold the space it took."""
    tmp, old = last.with_name(last.name + ".tmp"), last.with_name(last.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if last.exists():  # (with no ``last``, ``last.old`` is the only whole checkpoint: it stays until ``last`` exists)
        shutil.rmtree(old, ignore_errors=True)
        last.rename(old)
    tmp.rename(last)
    shutil.rmtree(old, ignore_errors=True)


def train_codec(s: CodecTrainSettings, progress: bool = True, stop_after: int | None = None) -> dict:
    """Train (or resume) the codec; returns the final metrics (``stop_after``: leave after that many steps, for
    tests of resuming). One run per folder (``OUT/.tinyhistory.lock``): a second one would resume from the same
    ``last/`` and write over the first one's checkpoints and log."""
    from tinyhistory.locks import folder_lock

    s.validate()
    with folder_lock(s.out, "codec train"):
        return _train_codec(s, progress, stop_after)


def _train_codec(s: CodecTrainSettings, progress: bool, stop_after: int | None) -> dict:
    from tinyhistory.data.video import decode_video
    from tinyhistory.eval.lpips import LPIPS
    from tinyhistory.train.trainer import StopRequest

    s.validate()
    out = Path(s.out)
    last = out / "last"
    if (out / "settings.json").is_file():
        _check_resume(s, out)
    frames = decode_video(s.video, fps=s.fps, size=s.size, start=s.start, duration=s.seconds)
    train, heldout = split_frames(frames, s.heldout_fraction)
    print(
        f"[codec] {s.video}: {len(train)} training frames, {len(heldout)} held out ({s.size}x{s.size}, {s.fps:g} fps)"
    )

    torch.manual_seed(s.seed)
    model = FrameAutoencoder(AutoencoderConfig(latent_channels=s.latent_channels, channels=tuple(s.channels)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=s.learning_rate, weight_decay=s.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr(step, s) / s.learning_rate)
    generator = torch.Generator().manual_seed(s.seed)
    step = 0
    resume = resumable_checkpoint(out)
    if resume is not None:
        from tinyhistory.files import read_tensors

        model.load_state_dict(read_tensors(resume / "codec.safetensors", "codec checkpoint"))
        step = load_training_state(resume, optimizer, scheduler, generator)
        print(f"[codec] resuming {out} at step {step}")
    out.mkdir(parents=True, exist_ok=True)
    replace_file(out / "settings.json", (json.dumps(asdict(s), indent=2) + "\n").encode(), "codec run's settings")
    lpips = LPIPS("alex").requires_grad_(False) if s.lpips_weight > 0 else None

    def checkpoint() -> None:
        with writing(last, "codec checkpoint", "free some space and run the same command again to resume"):
            swap_in_checkpoint(last, lambda folder: _save_state(folder, model, optimizer, scheduler, step, generator))

    # A line cut short by a kill is dropped (and named), and so are the steps after the checkpoint (done again), so
    # the log never holds a step twice and the next line never joins a broken one.
    repair_jsonl(out / "log.jsonl", "codec log", keep=lambda record: record.get("step", 0) <= step)
    stop = StopRequest()
    started, saved_at, done_here = time.monotonic(), time.monotonic(), 0
    try:
        with open(out / "log.jsonl", "a") as log:
            while step < s.steps:
                index = torch.randint(len(train), (s.batch_size,), generator=generator)
                batch = to_batch(train[index.numpy()])
                flip = torch.rand(s.batch_size, generator=generator) < 0.5
                batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
                model.train()
                losses = reconstruction_loss(model, batch, lpips, s.lpips_weight)
                optimizer.zero_grad(set_to_none=True)
                losses["loss"].backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                step += 1
                done_here += 1
                if step % s.log_every == 0 or step == s.steps:
                    record = {k: round(v.item(), 6) for k, v in losses.items()}
                    record |= {"step": step, "lr": scheduler.get_last_lr()[0]}
                    record["steps_per_s"] = round(done_here / (time.monotonic() - started), 4)
                    with writing(out / "log.jsonl", "codec log", "free some space and run the same command again"):
                        log.write(json.dumps(record) + "\n")
                        log.flush()
                    if progress:
                        print(f"[codec] step {step}/{s.steps} loss {record['loss']:.4f} l1 {record['l1']:.4f}")
                timed = time.monotonic() - saved_at > 60 * s.checkpoint_minutes
                if step % s.checkpoint_every == 0 or timed or stop.requested or step == stop_after:
                    checkpoint()
                    saved_at = time.monotonic()
                if stop.requested or step == stop_after:
                    print(f"[codec] stopped at step {step}; run the same command to resume")
                    return {}
    finally:
        stop.restore()
    checkpoint()

    model.eval()
    model.config.latent_mean, model.config.latent_std = latent_statistics(model, train)
    with writing(out, "codec", "free some space and run the same command again"):
        # The codec is its weights and its config (the latent statistics): a folder holding one of an earlier finish
        # and one of this one would load as a codec. Without config.json it does not load, so it goes first and
        # comes back last (save_autoencoder writes the weights, then the config).
        (out / "config.json").unlink(missing_ok=True)
        save_autoencoder(model, out)
    metrics = evaluate(LearnedCodec(model), heldout, s.eval_frames) | {"steps": step}
    replace_file(out / "metrics.json", (json.dumps(metrics, indent=2) + "\n").encode(), "codec metrics")
    print(f"[codec] held-out reconstruction: {json.dumps(metrics)}")
    return metrics
