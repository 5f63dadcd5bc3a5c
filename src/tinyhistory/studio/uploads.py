"""Checks on what a browser uploads, so that a bad file gets a sentence in the page instead of a traceback.

Every check raises :class:`UploadError` with a message meant for the page; nothing here trusts a file's name or
its claimed type: videos are opened with PyAV (``probe_video``), images with Pillow, sessions with safetensors.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_MAX_UPLOAD_MB = 2048  # a few minutes of 1080p; the limit is --max-upload-mb


class UploadError(ValueError):
    """An upload the studio refuses; ``str()`` is the message for the page."""


def check_size(path: str | Path, max_bytes: int) -> Path:
    """``path`` if it exists and is at most ``max_bytes`` long."""
    path = Path(path)
    if not path.is_file():
        raise UploadError(f"{path.name}: the upload did not arrive (no such file)")
    size = path.stat().st_size
    if size > max_bytes:
        raise UploadError(
            f"{path.name}: {_mb(size)} is over the studio's upload limit of {_mb(max_bytes)} "
            "(tinyhistory studio --max-upload-mb)"
        )
    if size == 0:
        raise UploadError(f"{path.name}: the file is empty")
    return path


def check_video(path: str | Path, max_bytes: int):
    """The video's header (:class:`~tinyhistory.data.video.VideoInfo`); refuses files that are not videos."""
    from tinyhistory.data.video import probe_video

    path = check_size(path, max_bytes)
    try:
        return probe_video(path)
    except (ValueError, FileNotFoundError) as exc:
        raise UploadError(f"{path.name}: not a video the studio can read ({_reason(exc, path)})") from None


def check_image(path: str | Path, max_bytes: int) -> Path:
    """``path`` if Pillow reads it as an image."""
    from PIL import Image, UnidentifiedImageError

    from tinyhistory.limits import check_image_pixels

    path = check_size(path, max_bytes)
    try:
        with Image.open(path) as image:
            check_image_pixels(path.name, *image.size)
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise UploadError(f"{path.name}: not an image the studio can read ({exc})") from None
    return path


def check_session(path: str | Path, max_bytes: int):
    """The sampling settings of a ``.session`` file (:class:`~tinyhistory.generate.session.SamplingSettings`)."""
    from tinyhistory.generate.session import GenerationSession

    path = check_size(path, max_bytes)
    try:
        return GenerationSession.read_settings(path)
    except (ValueError, TypeError, KeyError, FileNotFoundError) as exc:
        raise UploadError(f"{path.name}: not a tinyhistory session ({_reason(exc, path)})") from None


def _reason(exc: Exception, path: Path) -> str:
    """The library's message without the (temporary, meaningless to the user) upload path it starts with."""
    text = str(exc)
    for prefix in (f"{path}: ", f"{path.name}: "):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    return text.replace(str(path), path.name)


def _mb(size: int) -> str:
    return f"{size / 2**20:.3g} MB"
