"""Every real Wan preset, end to end on a tiny random-weight folder in the Hub layout, through the CLI a user types:

    tinyhistory data prepare --preset P --model DIR --input VIDEOS --out CACHE --set ...
    tinyhistory train --stage frame-query --preset P --model DIR --set 'data.cache="CACHE"' --steps 2 --out RUN1
    tinyhistory train --stage ar --preset P --init-from RUN1/final --steps 2 --out RUN2

Only sizes are set (frames, resolution, batch); the architecture comes from the folder. Then: the run folders hold
what trained and never the base model; the stage-II LoRA in the ComfyUI layout loads with the stock
``WanPipeline.load_lora_weights`` on the same folder and gives what our model gives without history.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import LORA_RUN_FLAGS
from diffusers import WanPipeline
from PIL import Image
from safetensors.torch import load_file
from tiny_model_folders import wan21_t2v_folder, wan22_a14b_folder, wan22_ti2v_folder
from video_files import captioned_videos, count_frames

from tinyhistory.cli import main
from tinyhistory.config import load_config
from tinyhistory.text.condition import TextCondition
from tinyhistory.train.checkpoint import load_model

PRESETS = {
    "wan2.1-t2v-1.3b": wan21_t2v_folder,
    "wan2.1-t2v-14b": wan21_t2v_folder,
    "wan2.2-ti2v-5b": wan22_ti2v_folder,
    "wan2.2-t2v-a14b": wan22_a14b_folder,
}
# A causal VAE caches 1 + 4k-frame windows; each window is one sample (17 frames = 5 latent frames).
SIZES = [
    "--set", "data.height=128", "--set", "data.width=128", "--set", "data.fps=8",
    "--set", "data.window_frames=17", "--set", "train.history_frames=17",
]  # fmt: skip
TRAIN = LORA_RUN_FLAGS


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_prepares_trains_both_stages_and_exports_a_portable_lora(preset, tmp_path):
    model_dir = PRESETS[preset](tmp_path / "model")
    cache, run1, run2 = tmp_path / "cache", tmp_path / "run1", tmp_path / "run2"
    videos = captioned_videos(tmp_path / "videos", 128, "a cat walks on the grass")
    model = ["--preset", preset, "--model", str(model_dir)]
    assert main(["data", "prepare", *model, "--input", str(videos), "--out", str(cache), *SIZES]) == 0
    from_cache = ["--set", f'data.cache="{cache}"', *SIZES, *TRAIN]
    assert main(["train", "--stage", "frame-query", *model, *from_cache, "--steps", "2", "--out", str(run1)]) == 0
    # stage II finds the base model through the stage-I checkpoint (no --model needed)
    stage2 = ["--stage", "ar", "--preset", preset, "--init-from", str(run1 / "final"), "--steps", "2"]
    assert main(["train", *stage2, *from_cache, "--set", "train.segment_frames=1", "--out", str(run2)]) == 0

    for run in (run1, run2):
        for folder in (run / "final", run / "last"):
            names = {p.name for p in folder.iterdir()}
            assert "transformer" not in names and not any(p.suffix == ".bin" for p in folder.iterdir())
            assert {"lora.safetensors", "lora_wan_comfyui.safetensors", "history_encoder.safetensors"} <= names
        # only what trained: LoRA tensors and the encoder, never a tensor of the frozen base
        keys = [k for f in (run / "final").glob("*.safetensors") for k in load_file(str(f))]
        base = load_file(str(next((model_dir / "transformer").glob("*.safetensors"))))
        assert keys and not set(keys) & set(base) and not any(k.removeprefix("transformer.") in base for k in keys)
        lora_keys = load_file(str(run / "final" / "lora.safetensors"))
        assert all(".lora_A." in k or ".lora_B." in k for k in lora_keys)
    cfg = json.loads((run2 / "final" / "config.json").read_text())
    assert cfg["train"]["dit"] == "lora" and cfg["model"]["path"] == str(model_dir)
    assert cfg["train"]["stage"] == "ar" and cfg["model"]["dtype"] == "bfloat16"

    # The portable LoRA on the stock pipeline equals our stage-II model without history (float32 both).
    ours, _ = load_model(run2 / "final", dtype=torch.float32)
    pipe = WanPipeline.from_pretrained(model_dir, torch_dtype=torch.float32)
    pipe.load_lora_weights(str(run2 / "final" / "lora_wan_comfyui.safetensors"))
    transformer = pipe.transformer.eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, ours.backbone.in_channels, 2, 8, 8, generator=g)
    t = torch.tensor([0.9])
    text = TextCondition(torch.randn(1, 6, transformer.config.text_dim, generator=g))
    lora_b = [p for n, p in ours.backbone.named_parameters() if "lora_B" in n]
    assert any(p.abs().sum() > 0 for p in lora_b)  # two steps moved the LoRA, so the comparison can fail
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x, t, text, None), transformer(x, t * 1000, text.states).sample)

    # Generation streams a storyboard through the causal VAE: from nothing, from a video, then resumed longer.
    story = tmp_path / "story.json"
    story.write_text(json.dumps({"shots": [{"start": 0, "end": 2, "prompt": "a cat walks on the grass"}]}))
    out = tmp_path / "gen" / "x.mp4"
    generate = ["generate", "--preset", preset, "--checkpoint", str(run2 / "final"), "--storyboard", str(story)]
    generate += ["--steps", "2", "--segment-frames", "2", "--no-progress", "--set", "data.height=128"]
    generate += ["--set", "data.width=128"]
    assert main([*generate, "--out", str(out)]) == 0
    assert count_frames(out) == 5 + 8  # 2 segments of 2 latent frames (1 s at 8 fps): 1 + 4, then 4·2 frames
    assert (tmp_path / "gen" / "x.mp4.png").stat().st_size > 500
    log = [json.loads(line) for line in (tmp_path / "gen" / "x.mp4.segments.jsonl").read_text().splitlines()]
    assert [r["pixel_frames"] for r in log] == [5, 8] and [r["start_s"] for r in log] == [0.0, 1.0]
    assert log[1]["context_tokens"] > 0  # the first segment's latents are history for the second
    continued = tmp_path / "gen" / "y.mp4"
    assert main([*generate, "--out", str(continued), "--history", str(videos / "a.mp4")]) == 0
    assert count_frames(continued) == 8 + 8  # after a video, every segment is 4·2 frames
    still = tmp_path / "still.png"
    Image.fromarray(np.full((128, 128, 3), 90, np.uint8)).save(still)
    from_image = tmp_path / "gen" / "z.mp4"
    assert main([*generate, "--out", str(from_image), "--image", str(still)]) == 0
    # TI2V-5B: the image is the first frame of the first segment (its own conditioning); others: one history block
    assert count_frames(from_image) == (5 + 8 if preset == "wan2.2-ti2v-5b" else 8 + 8)
    story.write_text(json.dumps({"shots": [{"start": 0, "end": 3, "prompt": "a cat walks on the grass"}]}))
    assert main([*generate, "--out", str(out), "--resume", str(out) + ".session", "--guidance", "2"]) == 0
    assert count_frames(out) == 5 + 8 + 8


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
        from tinyhistory.system import build_backbone

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
