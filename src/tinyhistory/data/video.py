"""Decode, resample and write videos with PyAV (FFmpeg's libraries, no ffmpeg binary needed).

Users' videos come from phones (stored sideways, with a display matrix that tells players to turn them), from
variable-frame-rate recorders and in every aspect ratio, so decoding here: turns each frame upright the way players
show it, picks frames by presentation time to give a constant rate, and fits each frame to a target ``height ×
width`` either by cropping (cover, then centre-crop) or by padding (fit inside, then black bars).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
from PIL import Image

from tinyhistory.data.frames import frames_from_archive, is_frame_archive, load_frames

if TYPE_CHECKING:
    from av.container import InputContainer
    from av.video.stream import VideoStream

RESIZE_MODES = ("crop", "pad")

# FFmpeg demuxers that render text files (.txt, .nfo, ANSI/binary art) as a video of glyphs: a caption or notes file
# would otherwise "decode" as a 640×400 picture of its own text instead of failing.
_TEXT_AS_VIDEO_FORMATS = frozenset({"tty", "bin", "xbin", "adf", "idf"})

# PIL's ROTATE_* transposes turn the picture counter-clockwise by that many degrees; indexed by quarter turns.
_COUNTER_CLOCKWISE = (
    None,
    Image.Transpose.ROTATE_90,
    Image.Transpose.ROTATE_180,
    Image.Transpose.ROTATE_270,
)


@dataclass(frozen=True)
class VideoInfo:
    """What a video's header says, so callers can pick a bucket or skip a file before decoding it."""

    width: int  # as displayed: after the rotation below
    height: int
    # Clockwise degrees (0, 90, 180 or 270) a player turns the stored frames to show them upright; the number of the
    # legacy ``rotate`` tag (a portrait phone clip says 90). ``decode_video`` applies it.
    rotation: int
    fps: float | None  # the stream's average frame rate; None when the header gives none
    duration: float | None  # seconds; None when the header gives none
    frames: int | None  # the header's frame count, else duration × fps; None when neither is known


def _check_mode(mode: str) -> None:
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize_mode = {mode!r} is not allowed; expected one of {', '.join(RESIZE_MODES)}")


def _check_hw(value: Sequence[int], what: str) -> tuple[int, int]:
    """``value`` as a ``(height, width)`` pair of positive integers, or an error naming ``what``."""
    try:
        height, width = value
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a (height, width) pair, got {value!r}") from None
    for n in (height, width):
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n <= 0:
            raise ValueError(f"{what} must be a (height, width) pair of positive integers, got {value!r}")
    return int(height), int(width)


def fit_frame(image: Image.Image, height: int, width: int, mode: str = "crop") -> Image.Image:
    """Fit ``image`` to ``height × width``, keeping its aspect ratio, with area (box) resampling.

    ``"crop"`` fills the target: the centred region of the source with the target's aspect ratio is cut out, then
    resized (the framing of resize-to-cover-then-centre-crop, without resampling pixels that are then thrown away;
    for a square target it is exactly the historical ``square_crop_resize``). ``"pad"`` keeps the whole picture: it
    is resized to fit inside, then centred on black (letter- or pillar-boxing), so nothing of a wide film shot is lost.
    """
    _check_mode(mode)
    height, width = _check_hw((height, width), "fit_frame target")
    w, h = image.size
    if mode == "crop":
        if w * height > h * width:  # source wider than target: keep the full height
            crop_w, crop_h = min(w, max(1, round(h * width / height))), h
        else:
            crop_w, crop_h = w, min(h, max(1, round(w * height / width)))
        left, top = (w - crop_w) // 2, (h - crop_h) // 2
        return image.crop((left, top, left + crop_w, top + crop_h)).resize((width, height), Image.Resampling.BOX)
    scale = min(width / w, height / h)
    inner_w, inner_h = min(width, max(1, round(w * scale))), min(height, max(1, round(h * scale)))
    canvas = Image.new(image.mode, (width, height))  # zeros: black in RGB
    canvas.paste(
        image.resize((inner_w, inner_h), Image.Resampling.BOX), ((width - inner_w) // 2, (height - inner_h) // 2)
    )
    return canvas


def square_crop_resize(image: Image.Image, size: int) -> Image.Image:
    """Centre-crop to a square, then area-resize to ``size × size`` (``fit_frame`` in ``"crop"`` mode)."""
    return fit_frame(image, size, size, "crop")


def choose_bucket(width: int, height: int, buckets: Sequence[Sequence[int]]) -> tuple[int, int]:
    """The ``(height, width)`` bucket whose aspect ratio is nearest a ``width × height`` source's.

    Nearness is measured on log(width / height), so 2:1 and 1:2 are equally far from square and a bucket is
    chosen by shape, not by how many pixels it has; ties go to the bucket listed first, so the order in the config
    is the tie-break.
    """
    if isinstance(width, bool) or isinstance(height, bool) or width <= 0 or height <= 0:
        raise ValueError(f"source size must be positive, got width={width!r}, height={height!r}")
    if not buckets:
        raise ValueError("no buckets to choose from; give at least one (height, width)")
    target = math.log(width / height)
    best: tuple[int, int] | None = None
    best_distance = math.inf
    for i, bucket in enumerate(buckets):
        bucket_h, bucket_w = _check_hw(bucket, f"buckets[{i}]")
        distance = abs(math.log(bucket_w / bucket_h) - target)
        if distance < best_distance - 1e-12:  # the tolerance keeps mirror-image ties (2:1 vs 1:2) with the first
            best, best_distance = (bucket_h, bucket_w), distance
    assert best is not None
    return best


def _clockwise(counter_clockwise: float) -> int:
    """FFmpeg's display-matrix angle (counter-clockwise, as ``VideoFrame.rotation``) as clockwise quarter turns in
    degrees, 0/90/180/270. Odd angles are rounded to the nearest quarter turn, as phones only write quarter turns."""
    return (-round(counter_clockwise / 90) % 4) * 90


def _upright(image: Image.Image, clockwise: int) -> Image.Image:
    """``image`` turned ``clockwise`` degrees (a multiple of 90), as a player shows a rotated stream."""
    transpose = _COUNTER_CLOCKWISE[(-clockwise // 90) % 4]
    return image if transpose is None else image.transpose(transpose)


def _open_video(path: Path) -> tuple[InputContainer, VideoStream]:
    """``(container, first video stream)`` of ``path``, or ``ValueError`` naming the file when it is not a video.

    The caller closes the container (``with container:``).
    """
    import av  # imported here so that frame archives work on machines without PyAV

    try:
        container = av.open(str(path))
    except av.FFmpegError as exc:
        raise ValueError(f"{path}: not a readable video ({exc})") from exc
    if container.format.name in _TEXT_AS_VIDEO_FORMATS:
        container.close()
        raise ValueError(f"{path}: a text file (FFmpeg reads it as {container.format.name!r} text art), not a video")
    if not container.streams.video:
        container.close()
        raise ValueError(f"{path}: contains no video stream")
    return container, container.streams.video[0]


def probe_video(path: str | Path) -> VideoInfo:
    """Size (as displayed), rotation, fps, duration and frame count of ``path`` without decoding the video.

    Everything but the rotation comes from the container header. PyAV (checked with 18.1) exposes a stream's
    display matrix only on decoded frames, so the first frame is decoded to read it: one frame, not the file. A
    frame archive (``*.frames.xz``) is loaded (it has no header) and reports its stored frames. Raises
    ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file when it is not a readable video or
    has no video stream.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}")
    if is_frame_archive(path):
        frames, fps = load_frames(path)
        return VideoInfo(frames.shape[2], frames.shape[1], 0, fps, len(frames) / fps, len(frames))
    import av

    container, stream = _open_video(path)
    with container:
        width, height = stream.codec_context.width, stream.codec_context.height
        if width <= 0 or height <= 0:
            raise ValueError(f"{path}: the video stream has no frame size in its header")
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else None
        duration: float | None = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        count = stream.frames if stream.frames > 0 else None
        if count is None and duration is not None and fps is not None:
            count = round(duration * fps)
        try:
            first = next(container.decode(stream), None)
        except av.FFmpegError as exc:
            raise ValueError(f"{path}: the first video frame does not decode ({exc})") from exc
    if first is None:
        raise ValueError(f"{path}: the video stream holds no frames")
    rotation = _clockwise(first.rotation)
    if rotation in (90, 270):
        width, height = height, width
    return VideoInfo(width, height, rotation, fps, duration, count)


def decode_video(
    path: str | Path,
    fps: float,
    size: int | None,
    start: float = 0.0,
    duration: float | None = None,
    *,
    bucket: Sequence[int] | None = None,
    resize_mode: str = "crop",
) -> np.ndarray:
    """Decode ``path`` into ``(T, H, W, 3)`` uint8 frames at a constant ``fps``.

    Frames are picked by nearest presentation time (a variable-frame-rate source gives a constant-rate result) and
    turned upright by the stream's display matrix (phone clips), then fitted by :func:`fit_frame` with
    ``resize_mode`` to ``bucket`` (``(height, width)``) when given, else to ``size × size``; ``size=None`` and no
    bucket keeps the native (upright) frame. Raises ``ValueError`` naming the file if nothing decodes. A frame
    archive (``*.frames.xz``, :mod:`tinyhistory.data.frames`) is read instead of decoded; it must hold exactly the
    fps and size asked for, and holds square centre-cropped frames only, so a bucket or ``"pad"`` is an error there.
    """
    _check_mode(resize_mode)
    target = None if bucket is None else _check_hw(bucket, "bucket")
    if target is None and size is not None:
        target = _check_hw((size, size), "size")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}")
    if is_frame_archive(path):
        if bucket is not None or resize_mode != "crop":
            raise ValueError(
                f"{path}: a frame archive holds square, centre-cropped frames; it cannot give bucket={bucket!r} "
                f"with resize_mode={resize_mode!r} (decode the original video instead)"
            )
        frames = frames_from_archive(path, fps, size)
        first = int(round(start * fps))
        last = None if duration is None else first + int(round(duration * fps))
        return frames[first:last]
    frames = list(iter_video_frames(path, fps, target, start, duration, resize_mode))
    if not frames:
        end = None if duration is None else start + duration
        raise ValueError(f"{path}: no frames decoded in [{start}, {end}) s")
    return np.stack(frames)


def iter_video_frames(
    path: str | Path,
    fps: float,
    target: tuple[int, int] | None,
    start: float = 0.0,
    duration: float | None = None,
    resize_mode: str = "crop",
    images: bool = True,
):
    """The frames :func:`decode_video` returns, one ``(H, W, 3)`` uint8 array at a time (``target``: ``(height,
    width)`` or None for native), so a long video is never held whole; ``images=False`` yields ``None`` per frame
    (counting frames costs no picture conversion)."""
    import av
    from av.video.reformatter import VideoReformatter

    # One colour converter for the whole stream: ``VideoFrame.to_image`` builds a fresh swscale context for every
    # frame, which cost ~6 ms per 128×128 frame here against ~0.15 ms reused (benchmarks/decode_convert.py; the same
    # pixels, tested).
    reformatter = VideoReformatter()
    container, stream = _open_video(Path(path))
    with container:
        stream.thread_type = "AUTO"
        if start > 0 and stream.time_base is not None:
            container.seek(int(start / stream.time_base), stream=stream, backward=True)
        end = None if duration is None else start + duration
        step = 1.0 / fps
        next_time = start
        emitted = 0
        previous: tuple[float, av.VideoFrame] | None = None
        for frame in container.decode(stream):
            if frame.time is None:
                continue
            t = float(frame.time)
            # Emit every output timestamp up to this frame, each from the nearer of the previous and this frame.
            while next_time <= t:
                if end is not None and next_time >= end - 1e-9:
                    return
                nearer_previous = previous is not None and abs(previous[0] - next_time) < abs(t - next_time)
                chosen = previous[1] if nearer_previous else frame
                if images:
                    rgb = reformatter.reformat(chosen, format="rgb24").to_ndarray()  # (H, W, 3) uint8
                    image = _upright(Image.fromarray(rgb), _clockwise(chosen.rotation))
                    yield np.asarray(image if target is None else fit_frame(image, *target, resize_mode))
                else:
                    yield None
                emitted += 1
                next_time = start + emitted * step
            previous = (t, frame)


def iter_video_chunks(path: str | Path, fps: float, target: tuple[int, int], chunk: int = 16):
    """``(n ≤ chunk, H, W, 3)`` uint8 pieces of a video at ``fps``, fitted to ``target`` (cropped)."""
    buffer: list[np.ndarray] = []
    for frame in iter_video_frames(path, fps, target):
        buffer.append(frame)
        if len(buffer) == chunk:
            yield np.stack(buffer)
            buffer = []
    if buffer:
        yield np.stack(buffer)


def count_video_frames(path: str | Path, fps: float) -> int:
    """How many frames :func:`decode_video` would give at ``fps`` (decoded, not converted)."""
    return sum(1 for _ in iter_video_frames(path, fps, None, images=False))


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


class VideoAppender:
    """An H.264 mp4 that grows segment by segment while generation runs (fragmented MP4: every segment starts a
    keyframe and a fragment, so players and ``ffprobe`` read the file so far at any time; nothing is rewritten).

    ``with VideoAppender(path, fps, height, width) as video: video.append(frames)`` for ``(n, H, W, 3)`` uint8.
    """

    def __init__(self, path: str | Path | BinaryIO, fps: float, height: int, width: int, crf: int = 18):
        """``path`` may also be a binary file object (``io.BytesIO``): FFmpeg's own file writes do not report a full
        disk (it writes a short file), so :class:`~tinyhistory.data.mp4.GrowingMp4` encodes into memory and writes
        the bytes itself."""
        import av

        target: str | BinaryIO = path  # type: ignore[assignment]
        if isinstance(path, str | Path):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            target = str(path)
        self.container = av.open(
            target, mode="w", format="mp4", options={"movflags": "frag_keyframe+empty_moov+default_base_moof"}
        )
        rate = Fraction(fps).limit_denominator(1000)
        self.stream = self.container.add_stream("libx264", rate=rate)
        self.stream.codec_context.time_base = 1 / rate
        self.stream.width, self.stream.height = width, height
        self.stream.pix_fmt = "yuv420p"
        # no B-frames: without an edit list (fragmented mp4) their reorder delay would shift every timestamp
        self.stream.options = {"crf": str(crf), "preset": "medium", "bf": "0"}
        self.frames = 0

    def append(self, frames: np.ndarray) -> None:
        import av

        for i, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
            frame.pts = self.frames + i  # in frames (the stream's time base is 1/fps): the first frame at t = 0
            if i == 0:
                frame.pict_type = av.video.frame.PictureType.I  # a new fragment: what came before is on disk
            for packet in self.stream.encode(frame):
                self.container.mux(packet)
        self.frames += len(frames)

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()

    def __enter__(self) -> VideoAppender:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
