"""An mp4 on disk that holds every finished segment the moment it is finished.

A single :class:`~tinyhistory.data.video.VideoAppender` kept open for the whole run lags behind: x264 holds frames
in its look-ahead and FFmpeg's fragmented-mp4 muxer writes a fragment only when the next keyframe arrives (or at
close), so the file on disk misses the latest segment (at 64×64 pixels it stays empty for many segments). The studio
and ``tinyhistory generate`` show and serve the file while generation goes on, so here each segment is encoded by
its own ``VideoAppender`` (closed, so everything is flushed) and its media fragments (``moof`` + ``mdat`` boxes) are
appended to one growing fragmented mp4: the first segment also gives the header (``ftyp`` + an empty ``moov``);
later fragments get their sequence numbers and decode times moved on so that they follow the frames already in the
file. Every segment starts a keyframe anyway (``VideoAppender`` starts a fragment per ``append``), so nothing is lost
by encoding them apart.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from tinyhistory.data.video import VideoAppender
from tinyhistory.files import writing

_CONTAINERS = {b"moov", b"trak", b"mdia", b"moof", b"traf"}  # boxes whose payload is made of boxes


def iter_boxes(data: bytes | bytearray, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, int, int]]:
    """``(type, offset, size)`` of the ISO-BMFF boxes in ``data[start:end]`` (one level)."""
    end = len(data) if end is None else end
    offset = start
    while offset + 8 <= end:
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if size == 1:  # a 64-bit size follows the type
            size = struct.unpack(">Q", data[offset + 8 : offset + 16])[0]
        elif size == 0:  # the box runs to the end
            size = end - offset
        if size < 8 or offset + size > end:
            raise ValueError(f"damaged mp4 box {kind!r} at byte {offset}")
        yield kind, offset, size
        offset += size


def find_box(data: bytes | bytearray, path: list[bytes], start: int = 0, end: int | None = None) -> tuple[int, int]:
    """``(offset, size)`` of the first box at ``path`` (e.g. ``[b"moov", b"trak", b"mdia", b"mdhd"]``)."""
    for kind, offset, size in iter_boxes(data, start, end):
        if kind == path[0]:
            if len(path) == 1:
                return offset, size
            if kind in _CONTAINERS:
                return find_box(data, path[1:], offset + 8, offset + size)
    raise ValueError(f"no {b'/'.join(path).decode()} box in the mp4")


def _timescale(header: bytes) -> int:
    """The video track's time scale (ticks per second) from ``moov/trak/mdia/mdhd``."""
    offset, _ = find_box(header, [b"moov", b"trak", b"mdia", b"mdhd"])
    version = header[offset + 8]
    field = offset + (28 if version == 1 else 20)  # after size, type, version/flags and the two times
    return struct.unpack(">I", header[field : field + 4])[0]


def _move_fragment(moof: bytearray, sequence: int, ticks: int) -> None:
    """Give a ``moof`` box the sequence number ``sequence`` and add ``ticks`` to its tracks' decode time."""
    mfhd, _ = find_box(moof, [b"mfhd"], 8)
    moof[mfhd + 12 : mfhd + 16] = struct.pack(">I", sequence)
    for kind, offset, size in iter_boxes(moof, 8):
        if kind != b"traf":
            continue
        tfdt, _ = find_box(moof, [b"tfdt"], offset + 8, offset + size)
        if moof[tfdt + 8] == 1:  # version 1: a 64-bit decode time
            (base,) = struct.unpack(">Q", moof[tfdt + 12 : tfdt + 20])
            moof[tfdt + 12 : tfdt + 20] = struct.pack(">Q", base + ticks)
        else:
            (base,) = struct.unpack(">I", moof[tfdt + 12 : tfdt + 16])
            moof[tfdt + 12 : tfdt + 16] = struct.pack(">I", base + ticks)


class GrowingMp4:
    """``append(frames)`` per segment; after each call the file at ``path`` plays every frame appended so far.

    The file is written with one ``write`` per segment, so a reader sees whole fragments unless it reads in the
    middle of that call.
    """

    def __init__(self, path: str | Path, fps: float, height: int, width: int, crf: int = 18):
        self.path = Path(path)
        self.fps, self.height, self.width, self.crf = fps, height, width, crf
        self.frames = 0
        self._fragments = 0
        self._timescale: int | None = None
        self._codec_config: bytes | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)

    def append(self, frames: np.ndarray) -> None:
        """Append ``(n, H, W, 3)`` uint8 frames as one (or more) fragments."""
        if len(frames) == 0:
            return
        encoded = io.BytesIO()  # in memory: FFmpeg writing a file on a full disk leaves a short file without a word
        with VideoAppender(encoded, self.fps, self.height, self.width, self.crf) as video:
            video.append(frames)
        data = encoded.getvalue()
        out = bytearray()
        header = self._header(data)
        timescale, fragments = self._timescale, self._fragments  # taken on only once the bytes are on disk
        if timescale is None:
            timescale = _timescale(header)
            out += header
        ticks = Fraction(self.frames) * timescale / Fraction(self.fps).limit_denominator(1000)
        for kind, offset, size in iter_boxes(data):
            box = bytearray(data[offset : offset + size])
            if kind == b"moof":
                fragments += 1
                _move_fragment(box, fragments, round(ticks))
                out += box
            elif kind == b"mdat":  # (``default_base_moof``: sample offsets count from the moof, so boxes move)
                out += box
        with writing(self.path, "video", "the segments before this one are intact"):
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                start = os.fstat(fd).st_size
                try:
                    rest = memoryview(bytes(out))
                    while rest:
                        rest = rest[os.write(fd, rest) :]
                    os.fsync(fd)
                except BaseException:
                    os.ftruncate(fd, start)  # never half a fragment: the file stays playable
                    raise
            finally:
                os.close(fd)
        self._timescale, self._fragments = timescale, fragments
        self.frames += len(frames)

    def _header(self, data: bytes) -> bytes:
        """``ftyp`` + ``moov`` of a segment file; the codec configuration must equal the first segment's, since the
        growing file keeps the first header for every fragment."""
        header = b"".join(data[o : o + s] for kind, o, s in iter_boxes(data) if kind in (b"ftyp", b"moov"))
        start = header.find(b"avcC")
        config = (
            header[start - 4 : start - 4 + struct.unpack(">I", header[start - 4 : start])[0]] if start >= 4 else b""
        )
        if self._codec_config is None:
            self._codec_config = config
        elif config != self._codec_config:
            raise RuntimeError("the H.264 encoder's parameter sets changed between segments; cannot append")
        return header


def whole_fragments(path: str | Path) -> int:
    """Cut a growing mp4 back to its last whole box (a writer killed inside an append leaves part of a fragment at
    the end; a ``moof`` without its ``mdat`` is dropped too); returns the bytes removed (0 for a whole file)."""
    path = Path(path)
    data = path.read_bytes()
    end, offset, last_moof = 0, 0, None
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if size == 1 and offset + 16 <= len(data):
            size = struct.unpack(">Q", data[offset + 8 : offset + 16])[0]
        if size < 8 or offset + size > len(data):
            break
        if kind == b"moof":
            last_moof = offset
        elif kind == b"mdat":
            last_moof = None
        offset += size
        end = offset if last_moof is None else last_moof
    if end < len(data):
        with open(path, "r+b") as f:
            f.truncate(end)
    return len(data) - end
