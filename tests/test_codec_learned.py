"""The learned framewise codec (codecs/learned.py) and its training command (`tinyhistory codec train`), on a short
moving test video written with PyAV and a narrow autoencoder, so each test runs in seconds."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from video_files import write_test_video

from tinyhistory.assemble import build_codec
from tinyhistory.cli import main
from tinyhistory.codecs.learned import AutoencoderConfig, FrameAutoencoder, LearnedCodec, load_autoencoder
from tinyhistory.codecs.learned_train import CodecTrainSettings, train_codec
from tinyhistory.config import load_config


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """40 frames of 32×32: smooth colour fields drifting right (10 fps)."""
    x = np.arange(32)[None, None, :]
    y = np.arange(32)[None, :, None]
    t = np.arange(40)[:, None, None]
    rgb = [np.sin((x + 2 * t) / 5) * np.cos(y / 7), np.cos((x - y + t) / 6), np.sin((y + t) / 4)]
    frames = np.stack([(127.5 + 100 * np.broadcast_to(c, (40, 32, 32))) for c in rgb], axis=-1).astype(np.uint8)
    return write_test_video(tmp_path_factory.mktemp("video") / "drift.mp4", frames)


def _settings(video, out, **changes) -> CodecTrainSettings:
    base = dict(video=str(video), out=str(out), fps=10.0, size=32, steps=4, batch_size=4, channels=(8, 8, 8))
    base |= dict(latent_channels=4, warmup_steps=1, lpips_weight=0.5, eval_frames=4, log_every=1)
    return CodecTrainSettings(**(base | changes))


def test_training_writes_a_codec_that_loads_through_the_registry_and_resumes_exactly(video, tmp_path):
    metrics = train_codec(_settings(video, tmp_path / "whole"), progress=False)
    assert metrics["steps"] == 4 and metrics["frames"] == 4  # held-out frames scored
    assert 5 < metrics["psnr"] < 60 and 0 < metrics["lpips_alex"] < 1
    assert json.loads((tmp_path / "whole" / "metrics.json").read_text()) == metrics
    log = [json.loads(line) for line in (tmp_path / "whole" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4] and all(r["lpips"] > 0 for r in log)

    # stopped after two steps and run again: the same weights as the uninterrupted run
    assert train_codec(_settings(video, tmp_path / "parts"), progress=False, stop_after=2) == {}
    train_codec(_settings(video, tmp_path / "parts"), progress=False)
    whole, parts = (load_file(str(tmp_path / run / "codec.safetensors")) for run in ("whole", "parts"))
    assert whole.keys() == parts.keys() and all(torch.equal(whole[k], parts[k]) for k in whole)
    with pytest.raises(ValueError, match=r"batch_size: 4 -> 8"):
        train_codec(_settings(video, tmp_path / "parts", batch_size=8), progress=False)

    # codec.kind = "learned" loads the folder; latents are normalised by the training frames' statistics
    cfg = load_config("tiny", overrides=['codec.kind="learned"', f'codec.path="{tmp_path / "whole"}"'])
    codec = build_codec(cfg.codec)
    assert isinstance(codec, LearnedCodec) and (codec.latent_channels, codec.spatial_factor) == (4, 8)
    from tinyhistory.codecs.learned_train import split_frames, to_batch
    from tinyhistory.data.video import decode_video

    train, _ = split_frames(decode_video(video, fps=10.0, size=32), 0.2)
    latents = codec.encode(to_batch(train).transpose(0, 1)[None])  # (1, 4, T, 4, 4)
    mean, std = latents.mean(dim=(0, 2, 3, 4)), latents.std(dim=(0, 2, 3, 4))
    torch.testing.assert_close(mean, torch.zeros(4), atol=1e-4, rtol=0)
    torch.testing.assert_close(std, torch.ones(4), atol=0.05, rtol=0)


def test_the_codec_is_framewise_and_its_streams_are_the_plain_calls():
    torch.manual_seed(0)
    model = FrameAutoencoder(AutoencoderConfig(latent_channels=4, channels=(8, 8, 8), latent_mean=[0.1] * 4,
                                               latent_std=[2.0] * 4))  # fmt: skip
    codec = LearnedCodec(model, batch_frames=3)
    pixels = torch.rand(2, 3, 5, 16, 24) * 2 - 1
    latents = codec.encode(pixels)
    assert latents.shape == (2, 4, 5, 2, 3)
    # frame by frame (and any chunking of the autoencoder calls) gives the same latents
    one = torch.cat([codec.encode(pixels[:, :, i : i + 1]) for i in range(5)], dim=2)
    torch.testing.assert_close(one, latents)
    raw = model.encode(pixels[0].transpose(0, 1))  # (5, 4, 2, 3)
    torch.testing.assert_close(latents[0].transpose(0, 1), (raw - 0.1) / 2.0)
    stream = codec.stream_decoder()
    pieces = torch.cat([stream.push(latents[:, :, :2]), stream.push(latents[:, :, 2:])], dim=2)
    torch.testing.assert_close(pieces, codec.decode(latents))
    assert codec.decode(latents).abs().max() <= 1


def test_bad_folders_and_inputs_are_named(tmp_path, video, capsys):
    with pytest.raises(FileNotFoundError, match=f"learned codec folder {tmp_path} lacks config.json"):
        load_autoencoder(tmp_path)
    model = FrameAutoencoder(AutoencoderConfig(latent_channels=4, channels=(8, 8, 8)))
    with pytest.raises(ValueError, match="no latent statistics"):
        LearnedCodec(model)
    model.config.latent_mean, model.config.latent_std = [0.0] * 4, [1.0] * 4
    with pytest.raises(ValueError, match="not divisible by the learned codec's factor 8"):
        LearnedCodec(model).encode(torch.zeros(1, 3, 1, 12, 16))
    with pytest.raises(ValueError, match="codec.path must name a local learned codec folder"):
        build_codec(load_config("tiny", overrides=['codec.kind="learned"']).codec)
    with pytest.raises(ValueError, match="size 36 is not divisible"):
        train_codec(_settings(video, tmp_path / "x", size=36), progress=False)
    assert main(["codec", "train", "--video", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "y")]) == 2
    assert "missing.mp4" in capsys.readouterr().err


def test_a_lossy_codec_adds_its_reconstruction_as_the_frame_query_ceiling(video, tmp_path):
    """The references of the frame-query protocol gain the codec's own reconstruction of the queried frames (what
    any model painting through it can at best reach); the lossless pixel codec's would be exact and is left out."""
    from tinyhistory.data.video import decode_video
    from tinyhistory.data.windows import to_pixels
    from tinyhistory.eval.frame_query import eval_set_for_clip, reference_metrics

    train_codec(_settings(video, tmp_path / "codec", steps=2), progress=False)
    pixels = to_pixels(decode_video(video, fps=10.0, size=32))  # (3, T, 32, 32)
    for kind, expected in (("learned", True), ("pixel", False)):
        sets = [f'codec.kind="{kind}"', f'codec.path="{tmp_path / "codec"}"', "backbone.in_channels=4", "data.size=32"]
        cfg = load_config("tiny", overrides=[*sets, "train.history_frames=8", 'history.rates=["2x2x2"]'])
        eval_set, codec = eval_set_for_clip(pixels, cfg.codec, cfg.history.rates, cfg.train, windows=2, queries=1)
        refs = reference_metrics(eval_set, pixels, codec)
        assert ("codec_reconstruction" in refs) is expected
        if expected:
            assert 5 < refs["codec_reconstruction"]["psnr"] < 60
