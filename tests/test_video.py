"""PyAV decoding/resampling on real footage and on files the test makes."""

from pathlib import Path

import av
import numpy as np
import pytest

from tinyhistory.data.video import decode_video, write_video
from tinyhistory.eval.metrics import psnr
from tinyhistory.paths import resolve_path

DEMO = resolve_path("assets/bbb_64px_8fps.mp4")


def test_demo_clip_decodes_to_four_minutes_at_8fps():
    frames = decode_video(DEMO, fps=8, size=64)
    assert frames.shape == (1920, 64, 64, 3) and frames.dtype == np.uint8
    assert 40 < frames.mean() < 220 and frames.std() > 20  # real content, not black


def test_resampling_picks_frames_by_time():
    half = decode_video(DEMO, fps=4, size=64, start=10.0, duration=5.0)
    full = decode_video(DEMO, fps=8, size=64, start=10.0, duration=5.0)
    assert half.shape[0] == 20 and full.shape[0] == 40
    assert np.array_equal(half, full[::2])  # 4 fps picks every other 8 fps frame


def test_write_then_read_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    smooth = np.repeat(np.repeat(rng.integers(0, 255, (6, 8, 8, 3), dtype=np.uint8), 4, 1), 4, 2)
    write_video(smooth, tmp_path / "x.mp4", fps=8, crf=0)
    back = decode_video(tmp_path / "x.mp4", fps=8, size=32)
    assert back.shape == (6, 32, 32, 3)
    # crf 0 is lossless on the luma; what is lost is yuv420p's chroma subsampling at block edges
    assert psnr(smooth, back) > 25
    with av.open(str(tmp_path / "x.mp4")) as c:
        assert c.streams.video[0].codec_context.name == "h264"


def test_lavfi_source_decodes(tmp_path):
    with av.open("testsrc2=size=96x64:rate=25:duration=1", format="lavfi") as src:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in src.decode(video=0)])
    write_video(frames, tmp_path / "t.mp4", fps=25)
    assert decode_video(tmp_path / "t.mp4", fps=5, size=32).shape == (5, 32, 32, 3)


@pytest.mark.parametrize("content", [b"", b"this is not a video at all" * 100])
def test_bad_files_raise_errors_that_name_the_file(tmp_path, content):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(content)
    with pytest.raises(ValueError, match="bad.mp4"):
        decode_video(bad, fps=8, size=64)


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        decode_video(Path("nope.mp4"), fps=8, size=64)
