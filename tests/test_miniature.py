"""The `miniature` preset's whole protocol (scripts/train_miniature.sh) at test size, through the CLI: a learned
codec, a cache made with it, a text-to-video base pretrained without history, stage I and stage II on that base
frozen (LoRA + encoder), and generation through the learned codec."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from video_files import write_test_video

from tinyhistory.cli import main
from tinyhistory.reproduce.demo import run_demo

# Sizes only: the protocol is the preset's. 64-px frames (8×8 latents, 4×4 tokens), one-block DiT, narrow encoder.
SMALL = [
    "data.size=64", "backbone.num_attention_heads=2", "backbone.attention_head_dim=32", "backbone.ffn_dim=64",
    "backbone.num_layers=1", "history.channels=[8, 16, 32, 32]", "history.attention_heads=2", "train.batch_size=2",
    "train.warmup_steps=1", "train.lora_rank=4", "data.window_frames=16", "train.history_frames=12",
]  # fmt: skip


def _sets(*pairs: str) -> list[str]:
    return [a for pair in pairs for a in ("--set", pair)]


def test_the_miniature_protocol_runs_end_to_end_on_a_frozen_pretrained_base(tmp_path):
    x, y, t = np.arange(64)[None, None, :], np.arange(64)[None, :, None], np.arange(96)[:, None, None]
    rgb = [np.sin((x + 2 * t) / 9) * np.cos(y / 11), np.cos((x - y + t) / 13), np.sin((y + t) / 7)]
    frames = np.stack([127.5 + 100 * np.broadcast_to(c, (96, 64, 64)) for c in rgb], axis=-1).astype(np.uint8)
    video = write_test_video(tmp_path / "footage.mp4", frames)  # 9.6 s at 10 fps → 76 frames at 8 fps

    codec = tmp_path / "codec"
    train_codec = ["codec", "train", "--video", str(video), "--size", "64", "--steps", "2", "--no-progress"]
    assert main([*train_codec, "--channels", "8", "8", "8", "--out", str(codec)]) == 0
    common = _sets(*SMALL, f'codec.path="{codec}"', f'data.cache="{tmp_path / "cache"}"')
    prepare = ["data", "prepare", "--preset", "miniature", "--input", str(video), "--out", str(tmp_path / "cache")]
    assert main([*prepare, *common]) == 0

    base = tmp_path / "base"
    pretrain = ["train", "--stage", "ar", "--preset", "miniature", "--steps", "2", "--no-progress", *common]
    pretrain += _sets('model.path=""', 'train.dit="full"', 'history.method="no_history"', "train.lora_rank=0")
    assert main([*pretrain, *_sets("train.segment_frames=4"), "--out", str(base)]) == 0
    assert (base / "final" / "model_index.json").is_file()

    stage1 = ["train", "--stage", "frame-query", "--preset", "miniature", "--model", str(base / "final"), *common]
    assert main([*stage1, "--steps", "2", "--no-progress", "--out", str(tmp_path / "s1")]) == 0
    stage2 = ["train", "--stage", "ar", "--preset", "miniature", "--init-from", str(tmp_path / "s1" / "final")]
    stage2 += [*common, *_sets("train.segment_frames=4"), "--steps", "2", "--no-progress"]
    assert main([*stage2, "--out", str(tmp_path / "s2")]) == 0
    for run in ("s1", "s2"):
        final = tmp_path / run / "final"
        assert "transformer" not in {p.name for p in final.iterdir()}  # the base is never copied, only referenced
        assert json.loads((final / "config.json").read_text())["model"]["path"] == str(base / "final")
    lora = load_file(str(tmp_path / "s2" / "final" / "lora.safetensors"))
    assert lora and any(v.abs().sum() > 0 for k, v in lora.items() if "lora_B" in k)

    story = tmp_path / "story.json"
    story.write_text(json.dumps({"shots": [{"start": 0, "end": 1, "prompt": "a rabbit in a meadow"}]}))
    out = tmp_path / "gen.mp4"
    generate = ["generate", "--preset", "miniature", "--checkpoint", str(tmp_path / "s2" / "final"), "--steps", "2"]
    generate += ["--storyboard", str(story), "--segment-frames", "4", "--no-progress", *_sets("data.size=64")]
    assert main([*generate, "--out", str(out)]) == 0
    import av

    with av.open(str(out)) as container:
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert decoded.shape == (8, 64, 64, 3)  # 1 s at 8 fps, through the learned codec's decoder
    assert torch.from_numpy(decoded).float().std() > 1  # a picture, not a constant


@pytest.mark.slow
def test_demo_from_scratch_trains_codec_base_rows_and_stage2_then_scores_them(tmp_path):
    """`tinyhistory demo --from-scratch` on the miniature: the same steps as scripts/train_miniature.sh (codec → cache
    → base → three stage-I rows on the frozen base → three stage-II LoRAs), at test size, then the demo's tables."""
    sizes = [*SMALL, "train.steps=2", "train.checkpoint_every=2", "train.segment_frames=4"]
    results = run_demo(
        tmp_path / "demo", from_scratch=True, preset="miniature", overrides=sizes, codec_steps=2,
        finetune_steps=1, sample_steps=1,
    )  # fmt: skip
    demo = tmp_path / "demo"
    codec = json.loads((demo / "codec" / "metrics.json").read_text())
    assert codec["steps"] == 2 and codec["frames"] == 192  # held-out frames of the footage, never trained on
    base = json.loads((demo / "base" / "final" / "config.json").read_text())
    assert base["train"]["dit"] == "full" and base["history"]["method"] == "no_history"
    for method in ("proposed", "large_patchifier", "no_history"):
        cfg = json.loads((demo / "train" / method / "final" / "config.json").read_text())
        assert cfg["train"]["dit"] == "lora" and cfg["model"]["path"] == str(demo / "base" / "final")
        assert cfg["codec"]["path"] == str(demo / "codec")
        assert "transformer" not in {p.name for p in (demo / "train" / method / "final").iterdir()}
        # the demo's stage-I protocol (sizes and steps are the test's): time shift 5, the readout where a context is
        assert cfg["train"]["timestep_shift"] == 5.0 and cfg["train"]["history_frames"] == 12
        assert cfg["history"]["phase_readout"] == (0 if method == "no_history" else 16)
    for name in ("proposed", "window", "none"):
        cfg = json.loads((demo / "train_stage2" / name / "final" / "config.json").read_text())
        assert cfg["train"]["stage"] == "ar" and cfg["model"]["path"] == str(demo / "base" / "final")
        assert cfg["train"]["timestep_shift"] == 5.0
        assert cfg["history"]["sliding_window"] == {"proposed": 2, "window": 3, "none": 0}[name]
        assert cfg["train"]["window_dropout"] == (0.5 if name == "proposed" else 0.0)
    assert results["stage2"]["models"]["proposed"]["context_tokens"] > 0
    assert set(results["methods"]) == {"proposed", "large_patchifier", "no_history"}
    assert "codec_reconstruction" in results["references"]  # the learned codec's own ceiling on the same frames
    assert results["stage2"]["continuation"]["models"]["none"]["generated_seconds"] >= 20
    assert "(miniature preset)" in (demo / "results.md").read_text()
