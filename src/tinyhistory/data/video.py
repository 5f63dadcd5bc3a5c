"""Decode, resample and write videos with PyAV (FFmpeg's libraries, no ffmpeg binary needed)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from tinyhistory.data.frames import frames_from_archive, is_frame_archive


def square_crop_resize(image: Image.Image, size: int) -> Image.Image:
    """Centre-crop to a square, then area-resize to ``size × size``."""
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BOX)


def decode_video(
    path: str | Path,
    fps: float,
    size: int | None,
    start: float = 0.0,
    duration: float | None = None,
) -> np.ndarray:
    """Decode ``path`` into ``(T, size, size, 3)`` uint8 frames at a constant ``fps``.

    Frames are picked by nearest presentation time (a variable-frame-rate source gives a constant-rate result),
    centre-cropped to a square and area-resized (``size=None`` keeps the native frame). Raises ``ValueError``
    naming the file if nothing decodes. A frame archive (``*.frames.xz``, :mod:`tinyhistory.data.frames`) is read
    instead of decoded; it must hold exactly the fps and size asked for.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}")
    if is_frame_archive(path):
        frames = frames_from_archive(path, fps, size)
        first = int(round(start * fps))
        last = None if duration is None else first + int(round(duration * fps))
        return frames[first:last]
    import av  # imported here so that frame archives work on machines without PyAV

    try:
        container = av.open(str(path))
    except av.FFmpegError as exc:
        raise ValueError(f"{path}: not a readable video ({exc})") from exc
    with container:
        if not container.streams.video:
            raise ValueError(f"{path}: contains no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if start > 0 and stream.time_base is not None:
            container.seek(int(start / stream.time_base), stream=stream, backward=True)
        end = None if duration is None else start + duration
        step = 1.0 / fps
        next_time = start
        frames: list[np.ndarray] = []
        previous: tuple[float, av.VideoFrame] | None = None
        done = False
        for frame in container.decode(stream):
            if frame.time is None:
                continue
            t = float(frame.time)
            # Emit every output timestamp up to this frame, each from the nearer of the previous and this frame.
            while next_time <= t:
                if end is not None and next_time >= end - 1e-9:
                    done = True
                    break
                nearer_previous = previous is not None and abs(previous[0] - next_time) < abs(t - next_time)
                chosen = previous[1] if nearer_previous else frame
                image = chosen.to_image()
                frames.append(np.asarray(image if size is None else square_crop_resize(image, size)))
                next_time = start + len(frames) * step
            if done:
                break
            previous = (t, frame)
    if not frames:
        raise ValueError(f"{path}: no frames decoded in [{start}, {end}) s")
    return np.stack(frames)


def write_video(frames: np.ndarray, path: str | Path, fps: float, crf: int = 18) -> None:
    """Write ``(T, H, W, 3)`` uint8 frames as an H.264 mp4 (yuv420p, playable everywhere)."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "slow"}
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
