"""Lossless archives of already-decoded frames (``*.frames.xz``): decode once, train anywhere.

A frame archive holds ``(T, H, W, 3)`` uint8 frames and the fps they were sampled at, as an xz-compressed ``.npz``
(no pickle). It lets a machine without PyAV (a rented GPU box, say) train on exactly the frames PyAV decoded here,
and it skips the decode on every run. ``decode_video`` reads an archive wherever it reads a video, and checks that
the archive's fps and size are the ones asked for rather than resampling silently.

    tinyhistory data frames assets/bbb_64px_8fps.mp4 --fps 8 --size 64 --out bbb.frames.xz
"""

from __future__ import annotations

import io
import lzma
from pathlib import Path

import numpy as np

SUFFIX = ".frames.xz"


def is_frame_archive(path: str | Path) -> bool:
    return str(path).endswith(SUFFIX)


def save_frames(path: str | Path, frames: np.ndarray, fps: float) -> None:
    """Write ``(T, H, W, 3)`` uint8 ``frames`` sampled at ``fps`` (atomic: a temporary file, then a rename)."""
    path = Path(path)
    if not is_frame_archive(path):
        raise ValueError(f"{path}: a frame archive's name must end in {SUFFIX}")
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    buffer = io.BytesIO()
    np.savez(buffer, frames=frames, fps=np.float64(fps))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(lzma.compress(buffer.getvalue(), preset=9 | lzma.PRESET_EXTREME))
    tmp.replace(path)


def load_frames(path: str | Path) -> tuple[np.ndarray, float]:
    """``(frames (T, H, W, 3) uint8, fps)`` from an archive written by :func:`save_frames`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"frame archive not found: {path}")
    try:
        with np.load(io.BytesIO(lzma.decompress(path.read_bytes())), allow_pickle=False) as data:
            return data["frames"], float(data["fps"])
    except (lzma.LZMAError, ValueError, KeyError, OSError) as exc:
        raise ValueError(f"{path}: not a tinyhistory frame archive ({exc})") from exc


def frames_from_archive(path: str | Path, fps: float, size: int | None) -> np.ndarray:
    """The archive's frames, after checking they were sampled at ``fps`` and are ``size × size`` (when given)."""
    frames, archived_fps = load_frames(path)
    if abs(archived_fps - fps) > 1e-6:
        raise ValueError(f"{path}: frames were archived at {archived_fps:g} fps, but {fps:g} fps was asked for")
    if size is not None and frames.shape[1:3] != (size, size):
        raise ValueError(f"{path}: frames are {frames.shape[1]}x{frames.shape[2]}, but {size}x{size} was asked for")
    return frames
