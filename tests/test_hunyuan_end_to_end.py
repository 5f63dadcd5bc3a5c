"""The ``hunyuanvideo`` preset end to end on a tiny random-weight HunyuanVideo folder in the Hub layout, through the
CLI a user types (as ``test_presets_end_to_end.py`` does for Wan):

    tinyhistory data prepare --preset hunyuanvideo --model DIR --input VIDEOS --out CACHE --set ...
    tinyhistory train --stage frame-query --preset hunyuanvideo --model DIR --set 'data.cache="CACHE"' --out RUN1
    tinyhistory train --stage ar --preset hunyuanvideo --init-from RUN1/final --out RUN2
    tinyhistory generate --preset hunyuanvideo --checkpoint RUN2/final --storyboard S --out X.mp4

The cache carries HunyuanVideo's whole text condition (Llama states, their mask, CLIP's pooled vector) so training
never loads a text encoder; the stage-II LoRA loads with the stock ``HunyuanVideoPipeline.load_lora_weights`` and
gives what our model gives without history; generation streams through the VAE's windowed streams.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from conftest import LORA_RUN_FLAGS
from diffusers import HunyuanVideoPipeline
from safetensors.torch import load_file
from tiny_model_folders import hunyuan_folder
from video_files import captioned_videos, count_frames

from tinyhistory.cli import main
from tinyhistory.data.cache import CacheSampler
from tinyhistory.generate.session import session_meta
from tinyhistory.geometry import Rate
from tinyhistory.text.cache import encode_prompts
from tinyhistory.text.condition import TextCondition
from tinyhistory.train.checkpoint import load_model

PROMPT = "a cat walks on the grass"
SIZES = [
    "--set", "data.height=64", "--set", "data.width=64", "--set", "data.fps=8",
    "--set", "data.window_frames=17", "--set", "train.history_frames=17",
]  # fmt: skip
TRAIN = LORA_RUN_FLAGS


def test_hunyuanvideo_prepares_trains_both_stages_exports_a_stock_lora_and_streams_a_storyboard(tmp_path):
    model_dir = hunyuan_folder(tmp_path / "model")
    cache, run1, run2 = tmp_path / "cache", tmp_path / "run1", tmp_path / "run2"
    videos = captioned_videos(tmp_path / "videos", 64, PROMPT)
    model = ["--preset", "hunyuanvideo", "--model", str(model_dir)]
    # 17-frame windows: the LR video at rT = 2 is 1 + 8 frames after the causal first group, floored to 1 + 4k
    assert main(["data", "prepare", *model, "--input", str(videos), "--out", str(cache), *SIZES]) == 0
    from_cache = ["--set", f'data.cache="{cache}"', *SIZES, *TRAIN]

    # The cache holds HunyuanVideo's whole condition per shot: states (zero past the prompt), mask, pooled vector.
    from tinyhistory.config import load_config

    sets = [a for a in (*SIZES, *TRAIN) if a not in ("--set", "--no-progress")]
    cfg = load_config("hunyuanvideo", overrides=[*sets, f'model.path="{model_dir}"', f'data.cache="{cache}"'])
    sampler = CacheSampler.for_run(cfg, "train", [Rate.parse("4x4x2")], [True])
    cached = sampler.text_for(torch.tensor([[0, 0]]), 0, 1)
    fresh = encode_prompts(cfg.text, [PROMPT])
    assert cached.mask is not None and cached.pooled is not None
    assert torch.equal(cached.mask, fresh.mask) and 0 < int(fresh.mask.sum()) < fresh.mask.shape[1]
    torch.testing.assert_close(cached.states, fresh.states, atol=2e-3, rtol=0)  # float16 in the shard
    torch.testing.assert_close(cached.pooled, fresh.pooled, atol=2e-3, rtol=0)
    assert cached.states[0, int(fresh.mask.sum()) :].abs().sum() == 0

    assert main(["train", "--stage", "frame-query", *model, *from_cache, "--steps", "2", "--out", str(run1)]) == 0
    stage2 = ["--stage", "ar", "--preset", "hunyuanvideo", "--init-from", str(run1 / "final"), "--steps", "2"]
    assert main(["train", *stage2, *from_cache, "--set", "train.segment_frames=1", "--out", str(run2)]) == 0
    for run in (run1, run2):
        names = {p.name for p in (run / "final").iterdir()}
        assert {"lora.safetensors", "lora_hunyuan_diffusers.safetensors", "history_encoder.safetensors"} <= names
        assert "transformer" not in names  # only what trained, never the frozen 12.8B base
        keys = [k for f in (run / "final").glob("*.safetensors") for k in load_file(str(f))]
        base = load_file(str(next((model_dir / "transformer").glob("*.safetensors"))))
        assert keys and not any(k.removeprefix("transformer.") in base for k in keys)
    lora = load_file(str(run2 / "final" / "lora_hunyuan_diffusers.safetensors"))
    assert any("single_transformer_blocks.0." in k for k in lora) and any(".transformer_blocks.0." in k for k in lora)
    assert not any("context_embedder" in k for k in lora)  # never the token refiner

    # The exported LoRA on the stock pipeline equals our stage-II model without history.
    ours, _ = load_model(run2 / "final", dtype=torch.float32)
    pipe = HunyuanVideoPipeline.from_pretrained(model_dir, torch_dtype=torch.float32)
    pipe.load_lora_weights(str(run2 / "final" / "lora_hunyuan_diffusers.safetensors"))
    stock = pipe.transformer.eval()
    assert any(p.abs().sum() > 0 for n, p in ours.backbone.named_parameters() if "lora_B" in n)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, ours.backbone.in_channels, 2, 8, 8, generator=g)
    text = TextCondition(fresh.states, fresh.mask, fresh.pooled)
    t = torch.tensor([0.9])
    guidance = torch.tensor([ours.backbone.guidance * 1000.0])
    with torch.no_grad():
        expected = stock(x, t * 1000, fresh.states, fresh.mask, fresh.pooled, guidance=guidance).sample
        torch.testing.assert_close(ours.eval()(x, t, text, None), expected, atol=1e-5, rtol=1e-5)

    # Generation: a storyboard streamed through the VAE, from nothing, from a video, then resumed longer.
    story = tmp_path / "story.json"
    story.write_text(json.dumps({"shots": [{"start": 0, "end": 2, "prompt": PROMPT}]}))
    out = tmp_path / "gen" / "x.mp4"
    generate = ["generate", "--preset", "hunyuanvideo", "--checkpoint", str(run2 / "final"), "--storyboard"]
    generate += [str(story), "--steps", "2", "--segment-frames", "2", "--no-progress"]
    generate += ["--set", "data.height=64", "--set", "data.width=64"]
    assert main([*generate, "--out", str(out)]) == 0
    assert count_frames(out) == 5 + 8  # 2 segments of 2 latent frames: 1 + 4, then 4·2 frames
    log = [json.loads(line) for line in (tmp_path / "gen" / "x.mp4.segments.jsonl").read_text().splitlines()]
    assert [r["pixel_frames"] for r in log] == [5, 8] and log[1]["context_tokens"] > 0
    session = session_meta(Path(str(out) + ".session"))["settings"]
    assert session["guidance"] == 1.0 and session["distilled_guidance"] == 6.0 and session["sampler"] == "euler"
    continued = tmp_path / "gen" / "y.mp4"
    assert main([*generate, "--out", str(continued), "--history", str(videos / "a.mp4")]) == 0
    assert count_frames(continued) == 8 + 8
    story.write_text(json.dumps({"shots": [{"start": 0, "end": 3, "prompt": PROMPT}]}))
    assert main([*generate, "--out", str(out), "--resume", str(out) + ".session", "--distilled-guidance", "4"]) == 0
    assert count_frames(out) == 5 + 8 + 8
