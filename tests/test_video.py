"""PyAV decoding/resampling on real footage and on files the test makes."""

import math
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image
from video_files import red_quadrant, red_top_left, write_test_video

from tinyhistory.config import load_config
from tinyhistory.data.frames import save_frames
from tinyhistory.data.video import (
    choose_bucket,
    decode_video,
    fit_frame,
    probe_video,
    square_crop_resize,
    write_video,
)
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


# --- rotation, variable frame rate, aspect ratio ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rotate_tag", "red_at"),
    [
        (0, "top-left"),
        # A player turns a rotate=90 clip 90° clockwise: the top-left corner goes to the top-right.
        (90, "top-right"),
        (180, "bottom-right"),
        # ... and a rotate=270 clip 90° counter-clockwise: the top-left corner goes to the bottom-left.
        (270, "bottom-left"),
    ],
)
def test_display_matrix_rotation_gives_upright_frames(tmp_path, rotate_tag, red_at):
    video = write_test_video(tmp_path / "phone.mp4", red_top_left(), ccw=-rotate_tag)
    with av.open(str(video)) as c:  # the file really carries the matrix, in FFmpeg's counter-clockwise convention
        assert next(c.decode(video=0)).rotation % 360 == -rotate_tag % 360
    frames = decode_video(video, fps=10, size=None)
    portrait = rotate_tag in (90, 270)
    assert frames.shape == ((3, 64, 32, 3) if portrait else (3, 32, 64, 3))
    assert all(red_quadrant(f) == red_at for f in frames)
    info = probe_video(video)
    assert (info.width, info.height, info.rotation) == ((32, 64) if portrait else (64, 32)) + (rotate_tag,)
    # The upright frame is what gets fitted: a portrait bucket of the displayed shape keeps the quadrant layout.
    fitted = decode_video(video, fps=10, size=None, bucket=(64, 32) if portrait else (32, 64))
    np.testing.assert_array_equal(fitted, frames)


def test_variable_frame_rate_picks_the_nearest_frame_in_time(tmp_path):
    times_ms = [0, 30, 200, 210, 500, 520, 900]
    levels = [20 + 30 * i for i in range(len(times_ms))]  # frame i is flat grey levels[i]
    frames = np.stack([np.full((32, 64, 3), v, np.uint8) for v in levels])
    video = write_test_video(tmp_path / "vfr.mp4", frames, times_ms=times_ms)

    def expected(fps: float, start: float = 0.0, duration: float | None = None) -> list[int]:
        """Brute force: every output time k/fps from start up to the last frame (or the end), its nearest frame."""
        out, k = [], 0
        end = math.inf if duration is None else start + duration - 1e-9
        while (t := start + k / fps) <= times_ms[-1] / 1000 + 1e-9 and t < end:
            out.append(min(range(len(times_ms)), key=lambda i: abs(times_ms[i] / 1000 - t)))
            k += 1
        return out

    assert expected(10) == [0, 1, 2, 3, 4, 4, 5, 5, 6, 6]  # the brute force itself, spelled out once
    for fps, start, duration in [(10, 0.0, None), (4, 0.0, None), (25, 0.0, None), (10, 0.2, 0.5)]:
        decoded = decode_video(video, fps=fps, size=16, start=start, duration=duration)
        picked = [int(np.argmin([abs(float(f.mean()) - v) for v in levels])) for f in decoded]
        assert picked == expected(fps, start, duration), (fps, start, duration)
        assert all(abs(float(f.mean()) - levels[i]) < 4 for f, i in zip(decoded, picked, strict=True))


def _stripes(width: int = 64, height: int = 32) -> Image.Image:
    """Four vertical stripes, A B C D, each a quarter of the width (horizontal stripes when ``height > width``)."""
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], np.uint8)
    along = max(width, height)
    line = np.repeat(colours, along // 4, axis=0)  # (along, 3)
    array = np.broadcast_to(line[None], (min(width, height), along, 3))
    return Image.fromarray(np.ascontiguousarray(array if width >= height else array.transpose(1, 0, 2)))


def test_crop_and_pad_of_a_two_to_one_source():
    colours = np.asarray(_stripes())[0, ::16]  # A B C D
    crop = np.asarray(fit_frame(_stripes(), 32, 32, "crop"))
    assert crop.shape == (32, 32, 3)
    # crop keeps the centre square (stripes B and C), full height
    assert (crop[:, :16] == colours[1]).all() and (crop[:, 16:] == colours[2]).all()
    pad = np.asarray(fit_frame(_stripes(), 32, 32, "pad"))
    assert pad.shape == (32, 32, 3)
    # pad keeps everything at half size, 16 rows centred: exactly black above and below
    assert (pad[:8] == 0).all() and (pad[24:] == 0).all()
    for i in range(4):
        assert (pad[8:24, 8 * i : 8 * (i + 1)] == colours[i]).all()
    # a portrait (1:2) source is pillar-boxed instead
    tall = np.asarray(fit_frame(_stripes(32, 64), 32, 32, "pad"))
    assert (tall[:, :8] == 0).all() and (tall[:, 24:] == 0).all()
    for i in range(4):
        assert (tall[8 * i : 8 * (i + 1), 8:24] == colours[i]).all()
    # a non-square bucket with the source's own shape is a plain area resize in either mode
    for mode in ("crop", "pad"):
        np.testing.assert_array_equal(
            np.asarray(fit_frame(_stripes(), 16, 32, mode)), np.asarray(_stripes().resize((32, 16), Image.BOX))
        )


def test_square_crop_is_unchanged_for_existing_callers():
    """``fit_frame(..., "crop")`` to a square is bit-for-bit the historical centre-square-crop + box resize."""
    rng = np.random.default_rng(1)
    for w, h, size in [(67, 41, 24), (41, 67, 24), (50, 50, 17), (97, 31, 31)]:
        image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        old = image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BOX)
        np.testing.assert_array_equal(np.asarray(square_crop_resize(image, size)), np.asarray(old))
        np.testing.assert_array_equal(np.asarray(fit_frame(image, size, size, "crop")), np.asarray(old))


def test_decode_video_pads_into_a_bucket(tmp_path):
    video = write_test_video(tmp_path / "wide.mp4", np.broadcast_to(np.asarray(_stripes()), (2, 32, 64, 3)))
    padded = decode_video(video, fps=10, size=64, bucket=(32, 32), resize_mode="pad")  # the bucket overrides size
    assert padded.shape == (2, 32, 32, 3)
    assert (padded[:, :8] == 0).all() and (padded[:, 24:] == 0).all()  # the bars are exact black, not decoded
    assert padded[:, 8:24].max(axis=3).min() > 200  # every pixel of the picture is a saturated stripe
    cropped = decode_video(video, fps=10, size=None, bucket=(16, 48))
    assert cropped.shape == (2, 16, 48, 3)


def test_choose_bucket():
    buckets = [(256, 256), (192, 320), (320, 192)]
    assert choose_bucket(1920, 1080, buckets) == (192, 320)  # landscape
    assert choose_bucket(1080, 1920, buckets) == (320, 192)  # portrait
    assert choose_bucket(500, 500, buckets) == (256, 256)  # square
    assert choose_bucket(640, 480, buckets) == (192, 320)  # 4:3 is nearer 5:3 than 1:1 in log-ratio
    assert choose_bucket(600, 500, buckets) == (256, 256)
    # ties go to the first listed: 1:1 is as far from 2:1 as from 1:2
    assert choose_bucket(64, 64, [(32, 64), (64, 32)]) == (32, 64)
    assert choose_bucket(64, 64, [(64, 32), (32, 64)]) == (64, 32)
    with pytest.raises(ValueError, match="no buckets"):
        choose_bucket(64, 64, [])
    with pytest.raises(ValueError, match=r"buckets\[1\]"):
        choose_bucket(64, 64, [(32, 32), (0, 32)])


def test_probe_video_reads_the_header(tmp_path):
    video = write_test_video(tmp_path / "plain.mp4", red_top_left(5))
    info = probe_video(video)
    assert (info.width, info.height, info.rotation, info.frames) == (64, 32, 0, 5)
    assert info.fps == pytest.approx(10) and info.duration == pytest.approx(0.5, abs=0.11)


def test_errors_name_the_file_key_and_value(tmp_path):
    video = write_test_video(tmp_path / "clip.mp4", red_top_left(1))
    with pytest.raises(ValueError, match=r"resize_mode = 'stretch'.*crop, pad"):
        decode_video(video, fps=10, size=32, resize_mode="stretch")
    with pytest.raises(ValueError, match=r"bucket must be a \(height, width\) pair"):
        decode_video(video, fps=10, size=32, bucket=(32, 0))
    archive = tmp_path / "clip.frames.xz"
    save_frames(archive, np.zeros((2, 32, 32, 3), np.uint8), fps=10)
    assert decode_video(archive, fps=10, size=32).shape == (2, 32, 32, 3)  # square archives still work
    with pytest.raises(ValueError, match="clip.frames.xz"):
        decode_video(archive, fps=10, size=32, bucket=(32, 48))
    with pytest.raises(ValueError, match="clip.frames.xz"):  # an archive's frames were cropped, not padded
        decode_video(archive, fps=10, size=32, resize_mode="pad")
    text = tmp_path / "notes.txt"
    text.write_text("not a video\n" * 50)
    # FFmpeg's tty demuxer would "play" a .txt as a picture of its glyphs; both entry points refuse it
    with pytest.raises(ValueError, match="notes.txt: a text file"):
        probe_video(text)
    with pytest.raises(ValueError, match="notes.txt: a text file"):
        decode_video(text, fps=10, size=32)
    with av.open(str(tmp_path / "sound.wav"), "w") as c:  # a real file without a video stream
        s = c.add_stream("pcm_s16le", rate=8000, layout="mono")
        silence = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        silence.sample_rate = 8000
        for packet in [*s.encode(silence), *s.encode()]:
            c.mux(packet)
    with pytest.raises(ValueError, match="sound.wav: contains no video stream"):
        probe_video(tmp_path / "sound.wav")
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        probe_video(tmp_path / "nope.mp4")


def test_data_config_validates_resize_and_buckets():
    cfg = load_config("tiny", overrides=['data.resize="pad"', "data.buckets=[[64, 112], [112, 64]]"])
    assert cfg.data.resize == "pad" and cfg.data.buckets == [[64, 112], [112, 64]]
    assert load_config("tiny").data.buckets == []  # empty: square data.size
    with pytest.raises(ValueError, match=r"data.resize = 'stretch'.*crop, pad"):
        load_config("tiny", overrides=['data.resize="stretch"'])
    with pytest.raises(ValueError, match=r"data.buckets\[1\] = \[64, 100\]"):
        load_config("tiny", overrides=["data.buckets=[[64, 112], [64, 100]]"])
    with pytest.raises(ValueError, match=r"data.buckets\[0\]"):
        load_config("tiny", overrides=["data.buckets=[[64]]"])


def test_a_clip_read_again_is_not_decoded_again_until_its_file_changes(tmp_path, monkeypatch):
    import os

    import tinyhistory.data.windows as windows

    frames = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    video = write_test_video(tmp_path / "clip.mp4", frames)  # 1.6 s at 10 fps: 13 frames at 8 fps
    decodes = []
    real = windows.decode_video
    monkeypatch.setattr(windows, "decode_video", lambda *a, **k: decodes.append(a[0]) or real(*a, **k))
    first = windows.load_clip(video, fps=8, size=32, heldout_fraction=0.25)
    first.train.add_(1)  # a caller's own tensors: changing them changes nothing kept
    second = windows.load_clip(video, fps=8, size=32, heldout_fraction=0.25)
    assert len(decodes) == 1 and second.train.shape == (3, 10, 32, 32) and second.heldout.shape[1] == 3
    assert torch.equal(second.train + 1, first.train)
    windows.load_clip(video, fps=4, size=32, heldout_fraction=0.25)  # another fps: decoded
    assert len(decodes) == 2
    windows.load_clip(video, fps=8, size=32, heldout_fraction=0.25)  # (only the last clip is kept)
    assert len(decodes) == 3
    os.utime(video, ns=(0, 10**18))  # the file changed
    windows.load_clip(video, fps=8, size=32, heldout_fraction=0.25)
    assert len(decodes) == 4


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv444p", "yuv420p10le", "gray"])
def test_decoded_frames_are_pyavs_own_rgb_conversion(tmp_path, pix_fmt):
    """The decoder converts every frame with one reused colour converter (a fresh one per frame was most of a
    decode's time): the pixels are exactly PyAV's ``VideoFrame.to_image`` of each frame, for 8- and 10-bit, 4:2:0,
    4:4:4 and grey sources, at a frame size that is not a multiple of 16."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (6, 30, 46, 3), dtype=np.uint8)  # (T, H, W, 3), no multiple of 16
    path = tmp_path / f"{pix_fmt}.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=10)
        stream.width, stream.height, stream.pix_fmt = 46, 30, pix_fmt
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with av.open(str(path)) as container:
        expected = np.stack([np.asarray(frame.to_image()) for frame in container.decode(video=0)])
    got = decode_video(path, fps=10, size=None)  # at the file's own rate: frame for frame (the last may drop)
    assert got.shape[1:] == expected.shape[1:] == (30, 46, 3) and len(got) >= 5
    np.testing.assert_array_equal(got, expected[: len(got)])
