"""Video files the tests write themselves with PyAV: variable frame rate, rotation metadata, odd content."""

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

RED = np.array([255, 0, 0], np.uint8)


def write_test_video(
    path: Path, frames: np.ndarray, times_ms: list[int] | None = None, ccw: float | None = None
) -> Path:
    """Write ``frames`` losslessly-ish (crf 0) at 10 fps, or at ``times_ms`` (VFR), optionally with a display matrix.

    ``ccw`` is FFmpeg's display-matrix angle (counter-clockwise, as PyAV's ``set_display_rotation`` and
    ``VideoFrame.rotation``); the legacy ``rotate=90`` tag of a portrait phone clip is ``ccw=-90``.
    """
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "0"}
        if times_ms is not None:
            stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        if ccw is not None:
            stream.set_display_rotation(ccw)
        for i, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
            if times_ms is not None:
                frame.pts, frame.time_base = times_ms[i], Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def red_top_left(frames: int = 3) -> np.ndarray:
    """64 wide × 32 high, black with a red top-left quadrant: every rotation and mirror of it is distinguishable."""
    picture = np.zeros((frames, 32, 64, 3), np.uint8)
    picture[:, :16, :32] = RED
    return picture


def red_quadrant(frame: np.ndarray) -> str:
    """Which quadrant of ``frame`` is red (the others must be black)."""
    h, w = frame.shape[0] // 2, frame.shape[1] // 2
    quadrants = {
        "top-left": frame[:h, :w],
        "top-right": frame[:h, w:],
        "bottom-left": frame[h:, :w],
        "bottom-right": frame[h:, w:],
    }
    # Means, not every pixel: yuv420p's chroma is upsampled across the quadrant edges, smearing a row or two.
    means = {name: q.reshape(-1, 3).mean(axis=0) for name, q in quadrants.items()}
    red = [name for name, m in means.items() if m[0] > 200 and m[1:].max() < 30]
    black = [name for name, m in means.items() if m.max() < 30]
    assert len(red) == 1 and len(black) == 3, (red, black)
    return red[0]


def write_video_without_frames(path: Path) -> Path:
    """A Matroska file whose video stream holds no frames (beside one second of silent audio).

    Without the audio the muxers drop the empty track or write nothing, so the file would test something else.
    """
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=8)
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        audio = container.add_stream("pcm_s16le", rate=8000)
        audio.layout = "mono"
        silence = av.AudioFrame.from_ndarray(np.zeros((1, 8000), np.int16), format="s16", layout="mono")
        silence.sample_rate = 8000
        for packet in [*audio.encode(silence), *audio.encode()]:
            container.mux(packet)
    return path


def count_frames(path: Path) -> int:
    """Frames PyAV decodes from ``path``."""
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def captioned_videos(folder: Path, size: int, caption: str) -> Path:
    """``folder/a.mp4`` and ``b.mp4``: 24 frames of ``size``² random pixels scrolling right (a moving picture), each
    with a musubi-style ``.txt`` caption beside it."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.mp4", "b.mp4"):
        base = rng.integers(0, 256, (1, size, size, 3), dtype=np.uint8)
        write_test_video(folder / name, np.concatenate([np.roll(base, 4 * i, axis=2) for i in range(24)]))
        (folder / name).with_suffix(".txt").write_text(caption)
    return folder
