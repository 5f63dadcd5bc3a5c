"""Folders in the exact layout ``tinyhistory generate`` writes, for study tests that cannot afford real generation.

``OUT.mp4`` is written with the project's own :class:`~tinyhistory.data.mp4.GrowingMp4` (one fragment per 1-s
segment, as ``generate`` appends them), ``OUT.mp4.segments.jsonl`` holds one record per segment with ``generate``'s
fields, ``OUT.mp4.png`` a contact sheet. Each system draws its own moving square, so every video has its own bytes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

FPS = 8  # the miniature preset's frame rate: 8 pixel frames per 1-s segment
SIZE = 64

STORYBOARDS = {
    "meadow": {"shots": [{"start": 0, "end": 1, "prompt": "A big white rabbit wakes up in a green meadow."}]},
    "tree": {
        "shots": [
            {"start": 0, "end": 1, "prompt": "Three rodents watch from a tree."},
            {"start": 1, "end": 2, "prompt": "The rabbit waves at them."},
        ]
    },
}


def write_storyboards(folder: Path, stories: dict = STORYBOARDS) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, story in stories.items():
        path = folder / f"{name}.json"
        path.write_text(json.dumps(story))
        paths.append(path)
    return paths


def frames_for(system: int, segment: int) -> np.ndarray:
    """(FPS, SIZE, SIZE, 3) uint8: a square in the system's colour moving at the system's speed."""
    frames = np.full((FPS, SIZE, SIZE, 3), 30 + 20 * system, np.uint8)
    colour = np.array([(90 * system) % 256, 200, (255 - 70 * system) % 256], np.uint8)
    for i in range(FPS):
        x = (segment * FPS + i) * (1 + system) % (SIZE - 16)
        frames[i, 24:40, x : x + 16] = colour
    return frames


def fake_generate_output(folder: Path, name: str, story: dict, system: int, prompts: dict | None = None) -> Path:
    """``folder/NAME.mp4`` and companions as ``generate --storyboard NAME.json --out folder/NAME.mp4`` writes them
    (``prompts``: segment index -> another prompt, to fake a video made from another storyboard)."""
    from tinyhistory.data.mp4 import GrowingMp4
    from tinyhistory.text.storyboard import Storyboard

    board = Storyboard.from_dict(story)
    out = folder / f"{name}.mp4"
    folder.mkdir(parents=True, exist_ok=True)
    video = GrowingMp4(out, FPS, SIZE, SIZE)
    sheet = []
    with open(out.with_name(out.name + ".segments.jsonl"), "w") as log:
        for k in range(math.ceil(board.duration)):
            frames = frames_for(system, k)
            video.append(frames)
            sheet.append(frames[0])
            prompt = (prompts or {}).get(k, board.prompt_for(k, k + 1))
            record = {
                "index": k,
                "start_frame": k * FPS,
                "frames": FPS,
                "prompt": prompt,
                "history_frames": k * FPS,
                "context_tokens": 40 * k,
                "latency_s": 0.5,
                "pixel_frames": FPS,
                "start_s": float(k),
            }
            log.write(json.dumps(record) + "\n")
    Image.fromarray(np.concatenate(sheet, axis=1)).save(out.with_name(out.name + ".png"))
    return out


def fake_system(folder: Path, system: int, stories: dict = STORYBOARDS) -> Path:
    for name, story in stories.items():
        fake_generate_output(folder, name, story, system)
    return folder
