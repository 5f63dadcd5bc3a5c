"""Figures shared by the demo and the reproductions: labelled frame grids (the paper's Fig. 5 layout)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def grid_image(rows: list[tuple[str, np.ndarray]], path: Path, scale: int = 2, label_width: int = 170) -> None:
    """Rows of frames ``(N, H, W, 3)`` uint8, each with a label on the left, saved as one PNG."""
    n, h, w, _ = rows[0][1].shape
    sh, sw = h * scale, w * scale
    canvas = Image.new("RGB", (label_width + n * (sw + 2), len(rows) * (sh + 2)), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (label, frames) in enumerate(rows):
        y = r * (sh + 2)
        draw.text((4, y + sh // 2 - 6), label, fill="black")
        for i, frame in enumerate(frames):
            tile = Image.fromarray(frame).resize((sw, sh), Image.Resampling.NEAREST)
            canvas.paste(tile, (label_width + i * (sw + 2), y))
    canvas.save(path)
