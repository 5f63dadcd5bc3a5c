"""The real Wan presets on a user's tiny random-weight folder in the Hub layout: the folder checks of data prepare,
the A14B high-noise expert's timesteps, an exact LoRA-run resume and the cached empty prompt. (Each preset end to end
through the CLI, with the other families: test_families_end_to_end.py.)
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import LORA_RUN_FLAGS
from safetensors.torch import load_file
from tiny_model_folders import wan21_t2v_folder
from video_files import captioned_videos

from tinyhistory.cli import main
from tinyhistory.config import load_config

# A causal VAE caches 1 + 4k-frame windows; each window is one sample (17 frames = 5 latent frames).
SIZES = [
    "--set", "data.height=128", "--set", "data.width=128", "--set", "data.fps=8",
    "--set", "data.window_frames=17", "--set", "train.history_frames=17",
]  # fmt: skip
TRAIN = LORA_RUN_FLAGS


def test_data_prepare_names_a_folder_that_lacks_a_part_or_holds_another_family(tmp_path, capsys):
    model_dir = wan21_t2v_folder(tmp_path / "model")
    videos = captioned_videos(tmp_path / "videos", 128, "a cat walks on the grass")
    args = ["data", "prepare", "--preset", "wan2.1-t2v-1.3b", "--model", str(model_dir), "--input", str(videos)]
    vae_home = tmp_path / "vae_home"  # another folder holding the VAE (never a parent of an --out: that is refused)
    vae_home.mkdir()
    (model_dir / "vae").rename(vae_home / "vae")
    assert main([*args, "--out", str(tmp_path / "c1"), *SIZES]) == 2
    assert f"model folder {model_dir} lacks vae/; expected the Hub's diffusers layout" in capsys.readouterr().err
    # the VAE of another folder (codec.path) is allowed
    assert main([*args, "--out", str(tmp_path / "c2"), "--set", f'codec.path="{vae_home}"', *SIZES]) == 0
    index = json.loads((model_dir / "model_index.json").read_text())
    (model_dir / "model_index.json").write_text(json.dumps({**index, "_class_name": "HunyuanVideoPipeline"}))
    assert main([*args, "--out", str(tmp_path / "c3"), "--set", f'codec.path="{vae_home}"', *SIZES]) == 2
    assert "holds a HunyuanVideoPipeline model, not the 'wan' family" in capsys.readouterr().err


def test_real_presets_need_a_model_folder_and_name_it(tmp_path):
    with pytest.raises(ValueError, match="give the model folder with --model DIR"):
        from tinyhistory.assemble import build_backbone

        build_backbone(load_config("wan2.2-ti2v-5b"))
    args = ["train", "--preset", "wan2.2-ti2v-5b", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "r")]
    assert main(args) == 2


def test_the_a14b_preset_trains_the_high_noise_expert_on_its_timesteps():
    from tinyhistory.geometry import Rate
    from tinyhistory.train.objectives import objective_for

    cfg = load_config("wan2.2-t2v-a14b", overrides=['train.stage="ar"'])
    assert cfg.model.transformer == "transformer" and cfg.train.min_t == 0.875
    objective = objective_for(cfg.train)
    hr = torch.zeros(64, 16, 9, 2, 2)
    batch = objective.batch(hr, [torch.zeros(64, 16, 4, 1, 1)], [Rate.parse("4x4x2")], torch.Generator().manual_seed(0))
    assert batch.t.min() >= 0.875 and batch.t.max() < 1.0


def test_a_lora_run_resumes_exactly_and_the_empty_prompt_is_the_encoded_one(tmp_path):
    """Stopped after one step and run again, a LoRA run ends where an uninterrupted one does (LoRA and encoder)."""
    from tinyhistory.train.trainer import train

    model_dir = wan21_t2v_folder(tmp_path / "model")
    cache = tmp_path / "cache"
    videos = captioned_videos(tmp_path / "videos", 128, "a cat walks on the grass")
    preset = ["--preset", "wan2.1-t2v-1.3b", "--model", str(model_dir)]
    assert main(["data", "prepare", *preset, "--input", str(videos), "--out", str(cache), *SIZES]) == 0
    sets = [a for a in (*SIZES, *TRAIN) if a not in ("--set", "--no-progress")]
    cfg = load_config("wan2.1-t2v-1.3b", overrides=[*sets, f'model.path="{model_dir}"', f'data.cache="{cache}"'])
    # CFG's empty prompt is UMT5's own encoding of "" (the pipeline's negative prompt), cached by data prepare so
    # training never loads the text encoder; not all-zero states.
    from tinyhistory.data.cache import read_empty_prompt
    from tinyhistory.text.umt5 import UMT5TextEncoder

    empty = read_empty_prompt(cfg.data.cache, cfg.text)
    expected = UMT5TextEncoder(model_dir, cfg.text.max_tokens).encode([""])
    torch.testing.assert_close(empty.states, expected)
    assert empty.states.abs().sum() > 0
    cfg.train.steps = 3
    train(cfg, tmp_path / "whole", progress=False)
    train(cfg, tmp_path / "parts", progress=False, stop_after=1)
    train(cfg, tmp_path / "parts", progress=False)
    for name in ("lora.safetensors", "history_encoder.safetensors"):
        whole, parts = (load_file(str(tmp_path / run / "final" / name)) for run in ("whole", "parts"))
        assert whole.keys() == parts.keys()
        for key in whole:
            assert torch.equal(whole[key], parts[key]), key
