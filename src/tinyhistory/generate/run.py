"""``tinyhistory generate``: a storyboard → an mp4, one segment at a time, with the whole history in context.

    tinyhistory generate --preset tiny --checkpoint checkpoints/tiny/stage2/proposed \\
        --storyboard story.json --out story.mp4 [--history clip.mp4 | --image still.png]

Shot times in the storyboard count from the start of the generated part (the given history comes before it).
Writes ``OUT`` (H.264, the generated part), ``OUT.png`` (a contact sheet, one frame per second),
``OUT.segments.jsonl`` (per segment: prompt, history length, context tokens, latency) and ``OUT.session``
(the paused session: ``--resume OUT.session`` continues it with a longer storyboard).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from tinyhistory.data.video import decode_video, write_video
from tinyhistory.generate.session import GenerationSession, SamplingSettings
from tinyhistory.system import build_codec
from tinyhistory.text.cache import encode_prompts
from tinyhistory.text.condition import TextCondition
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
    """diffusers group offload of the DiT: blocks live on the CPU and visit the GPU one at a time."""
    if device.type != "cuda":
        raise ValueError("--offload moves DiT blocks between the CPU and a CUDA device; no CUDA device is available")
    model.backbone.transformer.enable_group_offload(
        onload_device=device, offload_device=torch.device("cpu"), offload_type="block_level", num_blocks_per_group=1
    )


def generate(
    checkpoint: str | Path,
    storyboard: str | Path,
    out: str | Path,
    preset: str | None = None,
    history: str | Path | None = None,
    image: str | Path | None = None,
    resume: str | Path | None = None,
    settings: SamplingSettings | None = None,
    offload: bool = False,
    progress: bool = True,
    model_path: str | None = None,
) -> dict:
    if history is not None and image is not None:
        raise ValueError("give either --history or --image, not both")
    model, cfg = load_model(checkpoint, merge=True, model_path=model_path)
    if preset is not None and cfg.preset != preset:
        raise ValueError(f"{checkpoint} was trained with preset {cfg.preset!r}, not {preset!r}")
    story = Storyboard.load(storyboard)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if offload:
        model.producers.to(device)
        model.enhancers.to(device)
        enable_offload(model, device)
    else:
        model.to(device)
    codec = build_codec(cfg)

    def encode_text(prompts: list[str]) -> TextCondition:
        return encode_prompts(cfg.text, prompts)

    out = Path(out)
    session_path = out.with_name(out.name + ".session")
    if resume is not None:
        session = GenerationSession.load(resume, model, cfg, codec, encode_text, device)
    else:
        session = GenerationSession(model, cfg, codec, encode_text, settings, device)
        if history is not None:
            session.start_from_video(decode_video(history, fps=cfg.data.fps, size=cfg.data.size))
        elif image is not None:
            session.start_from_image(decode_image(image, cfg.data.size))
    origin = session.records[0].start_frame if session.records else session.history_frames
    fps = cfg.data.fps
    segments = session.storyboard_segments(story, origin)  # a resumed session continues where it stopped
    if segments <= 0:
        raise ValueError(f"the storyboard ({story.duration:g} s) is no longer than what was generated already")

    log_path = out.with_name(out.name + ".segments.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log:
        steps = session.follow_storyboard(story, origin)
        for segment in tqdm(steps, total=segments, desc="segments", unit="seg", disable=not progress):
            record = vars(segment) | {"start_s": round((segment.start_frame - origin) / fps, 3)}
            log.write(json.dumps(record) + "\n")
            log.flush()
            print(
                f"[generate] segment {record['index']}: {record['latency_s']:.2f} s, "
                f"{record['context_tokens']} context tokens, history {record['history_frames']} frames"
            )
            session.save(session_path)
    generated = session.frames[origin:]
    write_video(generated, out, fps)
    contact_sheet(generated, fps, out.with_suffix(".png"))
    return {
        "video": str(out),
        "contact_sheet": str(out.with_suffix(".png")),
        "log": str(log_path),
        "session": str(session_path),
        "generated_frames": len(generated),
        "seconds": len(generated) / fps,
    }


def decode_image(path: str | Path, size: int) -> np.ndarray:
    """An image file as one ``(size, size, 3)`` uint8 frame (centre square crop, area resize)."""
    from tinyhistory.data.video import square_crop_resize

    try:
        image = Image.open(path).convert("RGB")
    except (FileNotFoundError, OSError) as exc:
        raise ValueError(f"{path}: cannot read image ({exc})") from None
    return np.asarray(square_crop_resize(image, size))
