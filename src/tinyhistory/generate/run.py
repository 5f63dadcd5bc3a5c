"""``tinyhistory generate``: a storyboard → an mp4, one segment at a time, with the whole history in context.

    tinyhistory generate --preset tiny --checkpoint checkpoints/tiny/stage2/proposed \\
        --storyboard story.json --out story.mp4 [--history clip.mp4 | --image still.png]

Shot times in the storyboard count from the start of the generated part (the given history comes before it).
Writes ``OUT`` (H.264, the generated part, appended segment by segment as a fragmented mp4 that plays while the run
goes on), ``OUT.png`` (a contact sheet, one frame per second, rewritten per segment), ``OUT.segments.jsonl`` (per
segment: prompt, history length and context tokens, latency; frame counts in latent frames) and ``OUT.session``
(the paused session, saved after every segment: ``--resume OUT.session`` continues it with a longer storyboard).
With a real model folder everything runs in latent time through the VAE's exact streaming encoder and decoder.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from tinyhistory.config import apply_overrides
from tinyhistory.data.video import VideoAppender, count_video_frames, iter_video_chunks
from tinyhistory.generate.session import (
    GenerationSession,
    SamplingSettings,
    folder_scheduler_config,
    frame_shape,
)
from tinyhistory.system import build_codec
from tinyhistory.text.cache import PromptEncoder
from tinyhistory.text.storyboard import Storyboard
from tinyhistory.train.checkpoint import load_model


def contact_sheet(frames: np.ndarray, fps: float, path: str | Path, columns: int = 10, scale: int = 2) -> None:
    """One frame per second of ``(T, H, W, 3)`` uint8 frames in a grid, each labelled with its time."""
    picks = list(range(0, len(frames), max(1, round(fps))))
    h, w = frames.shape[1] * scale, frames.shape[2] * scale
    rows = math.ceil(len(picks) / columns)
    sheet = Image.new("RGB", (columns * (w + 2), rows * (h + 14)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, frame_index in enumerate(picks):
        x, y = (i % columns) * (w + 2), (i // columns) * (h + 14)
        sheet.paste(Image.fromarray(frames[frame_index]).resize((w, h), Image.Resampling.NEAREST), (x, y + 12))
        draw.text((x + 2, y), f"{frame_index / fps:.0f} s", fill="black")
    sheet.save(path)


def enable_offload(model, device: torch.device) -> None:
    """diffusers' block-level group offload of the DiT: blocks live on the CPU and visit the GPU one at a time."""
    if device.type != "cuda":
        raise ValueError("--offload moves DiT blocks between the CPU and a CUDA device; no CUDA device is available")
    offload_blocks(model, device)


def offload_blocks(model, device: torch.device, home: str = "cpu") -> None:
    """Group-offload the DiT's blocks (``home`` ⇄ ``device``, one block at a time) and keep the rest on ``device``.

    The adapter calls the DiT's patch embedding, condition embedder, RoPE, ``norm_out`` and ``proj_out`` itself
    (not the transformer's ``forward``, where diffusers' hooks would onload them), so those stay on the device; they
    are a small part of the weights. Each block is called on its own, so the hooks on the blocks do their work.
    """
    from diffusers.hooks import apply_group_offloading

    transformer = model.backbone.transformer
    apply_group_offloading(
        transformer,
        onload_device=device,
        offload_device=torch.device(home),
        offload_type="block_level",
        num_blocks_per_group=1,
    )
    # diffusers puts everything outside ``blocks`` in a group onloaded by the transformer's own forward, which the
    # adapter never calls: those modules (a small part of the weights) live on the device instead.
    for name, child in transformer.named_children():
        if name != "blocks":
            child.to(device)
    for parameter in transformer.parameters(recurse=False):  # scale_shift_table
        parameter.data = parameter.data.to(device)


def sampling_settings(cfg, given: dict, saved: SamplingSettings | None, resume: str | Path | None) -> SamplingSettings:
    """This run's sampling settings: the flags given, else the saved session's (``--resume``), else the defaults
    (the preset's 1-s segment; UniPC as the pipeline's scheduler when the model folder has one, else Euler).

    A resumed session takes new steps, guidance, sampler, flow shift or seed for what comes next (and says so);
    the segment length is fixed by the session (positions and blocks depend on it)."""
    given = {k: v for k, v in given.items() if v is not None}
    if saved is not None:
        if "segment_frames" in given and given["segment_frames"] != saved.segment_frames:
            raise ValueError(
                f"--segment-frames {given['segment_frames']}: {resume} was made with {saved.segment_frames}-frame "
                "segments, which a resumed session keeps"
            )
        changed = {k: v for k, v in given.items() if getattr(saved, k) != v}
        if changed:
            before = ", ".join(f"{k} {getattr(saved, k)} -> {v}" for k, v in changed.items())
            print(f"[generate] resuming {resume} with new settings for the segments to come: {before}")
        return SamplingSettings(**(asdict(saved) | given))
    defaults = {
        "segment_frames": cfg.train.segment_frames,
        "sampler": "unipc" if folder_scheduler_config(cfg) else "euler",
    }
    return SamplingSettings(**(defaults | given))


def generate(
    checkpoint: str | Path,
    storyboard: str | Path,
    out: str | Path,
    preset: str | None = None,
    history: str | Path | None = None,
    image: str | Path | None = None,
    resume: str | Path | None = None,
    settings: dict | SamplingSettings | None = None,
    offload: bool = False,
    progress: bool = True,
    model_path: str | None = None,
    overrides: list[str] = (),
) -> dict:
    """Stream ``storyboard`` into ``out`` (see the module docstring). ``settings``: the sampling flags given (None
    for those not given), or whole :class:`SamplingSettings`; ``overrides``: ``section.key=value`` for the
    checkpoint's config (e.g. ``data.height=128``)."""
    if history is not None and image is not None:
        raise ValueError("give either --history or --image, not both")
    model, cfg = load_model(checkpoint, merge=True, model_path=model_path)
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    if preset is not None and cfg.preset != preset:
        raise ValueError(f"{checkpoint} was trained with preset {cfg.preset!r}, not {preset!r}")
    story = Storyboard.load(storyboard)
    saved = GenerationSession.read_settings(resume) if resume is not None else None
    if isinstance(settings, SamplingSettings):
        settings = asdict(settings)
    settings = sampling_settings(cfg, settings or {}, saved, resume)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if offload:
        model.producers.to(device)
        model.enhancers.to(device)
        enable_offload(model, device)
    else:
        model.to(device)
    # The VAE stays on the device (0.5 GB for Wan 2.1, 2.8 GB for Wan 2.2 in float32): its causal caches live there.
    codec = build_codec(cfg).to(device)
    encode_text = PromptEncoder(cfg.text, device, offload)  # built once; with --offload it waits on the CPU

    out = Path(out)
    session_path = out.with_name(out.name + ".session")
    height, width = frame_shape(cfg.data)
    if resume is not None:
        session = GenerationSession.load(resume, model, cfg, codec, encode_text, device, settings)
    else:
        session = GenerationSession(model, cfg, codec, encode_text, settings, device)
        if history is not None:
            if not Path(history).is_file():
                raise FileNotFoundError(f"video file not found: {history}")
            total = count_video_frames(history, cfg.data.fps)
            session.start_from_video(iter_video_chunks(history, cfg.data.fps, (height, width)), total)
        elif image is not None:
            session.start_from_image(decode_image(image, height, width))
    fps = cfg.data.fps
    segments = session.storyboard_segments(story)  # a resumed session continues where it stopped
    if segments <= 0:
        raise ValueError(f"the storyboard ({story.duration:g} s) is no longer than what was generated already")

    log_path = out.with_name(out.name + ".segments.jsonl")
    sheet = ContactSheet(fps)
    with _growing_video(out, fps, height, width, resume, sheet) as video, open(log_path, "a") as log:
        bar = tqdm(total=segments, desc="segments", unit="seg", disable=not progress)
        for segment, frames in session.follow_storyboard(story):
            video.append(frames)
            sheet.add(frames)
            sheet.save(out.with_suffix(".png"))
            per_latent = codec.temporal_factor / fps
            record = vars(segment) | {"start_s": round((segment.start_frame - session.origin) * per_latent, 3)}
            log.write(json.dumps(record) + "\n")
            log.flush()
            session.save(session_path)
            bar.set_postfix(context_tokens=segment.context_tokens, latency_s=segment.latency_s)
            bar.update(1)
        bar.close()
        written = video.frames
    return {
        "video": str(out),
        "contact_sheet": str(out.with_suffix(".png")),
        "log": str(log_path),
        "session": str(session_path),
        "generated_frames": written,
        "seconds": written / fps,
    }


class _growing_video:
    """The output mp4, appended to per segment. On ``--resume`` the frames already in ``out`` are carried into the
    new file first (decoded and re-encoded piece by piece, never held whole), then generation appends."""

    def __init__(self, out: Path, fps: float, height: int, width: int, resume, sheet: ContactSheet):
        self.out, self.fps, self.height, self.width, self.resume, self.sheet = out, fps, height, width, resume, sheet

    def __enter__(self) -> VideoAppender:
        previous = None
        if self.resume is not None and self.out.is_file():
            previous = self.out.with_name(self.out.name + ".previous.mp4")
            self.out.replace(previous)
        self.video = VideoAppender(self.out, self.fps, self.height, self.width)
        if previous is not None:
            for chunk in iter_video_chunks(previous, self.fps, (self.height, self.width)):
                self.video.append(chunk)
                self.sheet.add(chunk)
            previous.unlink()
        return self.video

    def __exit__(self, *exc) -> None:
        self.video.close()


class ContactSheet:
    """One frame per second of the generated video, collected as segments arrive (never the whole video)."""

    def __init__(self, fps: float):
        self.fps = fps
        self.every = max(1, round(fps))
        self.seen = 0
        self.picks: list[np.ndarray] = []

    def add(self, frames: np.ndarray) -> None:
        for i in range(len(frames)):
            if (self.seen + i) % self.every == 0:
                self.picks.append(frames[i])
        self.seen += len(frames)

    def save(self, path: str | Path) -> None:
        if self.picks:
            contact_sheet(np.stack(self.picks), 1.0, path)


def decode_image(path: str | Path, height: int, width: int) -> np.ndarray:
    """An image file as one ``(height, width, 3)`` uint8 frame (cover, then centre crop)."""
    from tinyhistory.data.video import fit_frame

    try:
        image = Image.open(path).convert("RGB")
    except (FileNotFoundError, OSError) as exc:
        raise ValueError(f"{path}: cannot read image ({exc})") from None
    return np.asarray(fit_frame(image, height, width, "crop"))
