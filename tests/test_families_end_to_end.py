"""Every model family end to end on a tiny random-weight folder in the Hub layout, through the CLI a user types:

    tinyhistory data prepare --preset P --model DIR --input VIDEOS --out CACHE --set ...
    tinyhistory train --stage frame-query --preset P --model DIR --set 'data.cache="CACHE"' --steps 2 --out RUN1
    tinyhistory train --stage ar --preset P --init-from RUN1/final --steps 2 --out RUN2
    tinyhistory generate --preset P --checkpoint RUN2/final --storyboard S --out X.mp4

Only sizes are set (frames, resolution, batch); the architecture comes from the folder. Then: the cache carries the
family's whole text condition, so training never loads a text encoder; the run folders hold what trained and never
the base model; the stage-II LoRA files load with the family's stock pipeline (``load_lora_weights``) on the same
folder and give what our model gives without history; generation streams a storyboard through the family's VAE from
nothing, from a video and from an image, then resumed longer.

One case per pipeline that runs differently (the per-family facts are in ``FAMILIES``). Among the Wan presets,
wan2.1-t2v-1.3b and wan2.1-t2v-14b run the same pipeline on the same tiny folder (1.3b inherits everything from 14b
but its name and the base geometry of the variant check, which the tiny folder passes for both), so they share one
case; wan2.2-ti2v-5b differs in its 48-channel DiT, 16×-space VAE and its image start (the image is the first frame
of the first segment); wan2.2-t2v-a14b in its two experts (the high-noise one trains on its timesteps, the low-noise
one takes the late sampling steps).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import LORA_RUN_FLAGS
from diffusers import HunyuanVideoPipeline, LTXPipeline, WanPipeline
from PIL import Image
from safetensors.torch import load_file
from tiny_model_folders import hunyuan_folder, ltx_folder, wan21_t2v_folder, wan22_a14b_folder, wan22_ti2v_folder
from video_files import captioned_videos, count_frames

from tinyhistory.cli import main
from tinyhistory.config import load_config
from tinyhistory.data.cache import CacheSampler
from tinyhistory.generate.session import session_meta
from tinyhistory.geometry import Rate
from tinyhistory.text.cache import encode_prompts
from tinyhistory.train.checkpoint import load_model

PROMPT = "a cat walks on the grass"


def _wan_velocity(transformer, x, t, text, ours):
    return transformer(x, t * 1000, text.states).sample


def _hunyuan_velocity(transformer, x, t, text, ours):
    guidance = torch.tensor([ours.backbone.guidance * 1000.0])  # the embedded guidance, times 1000 as the pipeline
    return transformer(x, t * 1000, text.states, text.mask, text.pooled, guidance=guidance).sample


def _ltx_velocity(transformer, x, t, text, ours):
    _, _, frames, height, width = x.shape
    packed = transformer(
        LTXPipeline._pack_latents(x), text.states, t * 1000, text.mask.bool(), num_frames=frames, height=height,
        width=width, rope_interpolation_scale=(8 / 25, 32, 32),  # the pipeline's at its default frame_rate
    ).sample  # fmt: skip
    return LTXPipeline._unpack_latents(packed, frames, height, width)


@dataclass(frozen=True)
class Family:
    """What differs between the families' end-to-end runs; everything else is one code path."""

    preset: str
    make_folder: Callable[[Path], Path]  # tests/tiny_model_folders.py
    pipeline: type  # the stock diffusers pipeline that loads our LoRA files
    # (stock transformer, x, t in [0, 1], TextCondition, our model) -> velocity, called as the pipeline calls it
    stock_velocity: Callable
    # The run's LoRA files the stock pipeline loads, the portable one (ComfyUI / the family's layout) first.
    lora_files: tuple[str, ...]
    # The portable file's keys: every one starts with ``prefix``; some key holds each of ``has``, none of ``lacks``.
    portable_prefix: str
    portable_has: tuple[str, ...] = ()
    portable_lacks: tuple[str, ...] = ()
    text_parts: tuple[str, ...] = ()  # what the text condition holds beyond token states (cached and encoded)
    size: int = 128  # pixels, height = width (a multiple of the VAE's factor at the history rate)
    latent: int = 8  # the stock comparison's latent height = width
    segment_frames: int = 2  # latent frames per generated second (8 fps)
    first_segment: int = 5  # pixel frames of the first segment from nothing (causal VAE: 1 + ...)
    later_segment: int = 8  # pixel frames of every later segment
    image_first_frame: bool = False  # --image: the first frame of the first segment (else one history block)
    settings: dict = field(default_factory=dict)  # what the first run's session file holds
    resume_flags: tuple[str, ...] = ()  # sampling settings changed on --resume
    tolerance: dict = field(default_factory=dict)  # stock comparison (default: assert_close's float32)


_WAN = dict(
    pipeline=WanPipeline,
    stock_velocity=_wan_velocity,
    lora_files=("lora_wan_comfyui.safetensors",),
    portable_prefix="diffusion_model.blocks.",
    portable_has=(".self_attn.q.lora_A.", ".cross_attn.k.lora_B.", ".ffn.2.lora_A.", ".alpha"),
    settings={"sampler": "unipc", "guidance": 3.0},
    resume_flags=("--guidance", "2"),
)
FAMILIES = [
    Family("wan2.1-t2v-1.3b", wan21_t2v_folder, **_WAN),
    Family("wan2.2-ti2v-5b", wan22_ti2v_folder, image_first_frame=True, **_WAN),
    Family("wan2.2-t2v-a14b", wan22_a14b_folder, **_WAN),
    Family(
        "hunyuanvideo",
        hunyuan_folder,
        HunyuanVideoPipeline,
        _hunyuan_velocity,
        ("lora_hunyuan_diffusers.safetensors",),
        portable_prefix="transformer.",
        portable_has=("single_transformer_blocks.0.", ".transformer_blocks.0."),
        portable_lacks=("context_embedder",),  # never the token refiner
        text_parts=("mask", "pooled"),  # Llama states, their mask, CLIP's pooled vector
        size=64,  # 17-frame windows: the LR video at rT = 2 is 1 + 8 frames, floored to 1 + 4k
        settings={"sampler": "euler", "guidance": 1.0, "distilled_guidance": 6.0},
        resume_flags=("--distilled-guidance", "4"),
        tolerance=dict(atol=1e-5, rtol=1e-5),
    ),
    Family(
        "ltx-video",
        ltx_folder,
        LTXPipeline,
        _ltx_velocity,
        ("lora_ltx_comfyui.safetensors", "lora.safetensors"),  # LTXPipeline converts the original layout itself
        portable_prefix="diffusion_model.transformer_blocks.",
        portable_has=(".attn2.to_k.lora_A.", ".ff.net.2.lora_B."),
        text_parts=("mask",),  # T5 states and their mask
        latent=4,  # 32× space: 128 pixels are 4 latents
        segment_frames=1,  # 8 frames per latent frame: 1 s at 8 fps
        first_segment=1,
        settings={"sampler": "euler", "guidance": 3.0},  # the folder's sampler, the family's CFG
        tolerance=dict(atol=1e-5, rtol=1e-5),
    ),
]


def _sizes(size: int) -> list[str]:
    """A causal VAE caches 1 + 4k (LTX: 1 + 8k) frame windows; each window is one sample (17 frames)."""
    return [
        "--set", f"data.height={size}", "--set", f"data.width={size}", "--set", "data.fps=8",
        "--set", "data.window_frames=17", "--set", "train.history_frames=17",
    ]  # fmt: skip


@pytest.mark.parametrize("fam", FAMILIES, ids=lambda f: f.preset)
def test_family_prepares_trains_both_stages_exports_a_stock_lora_and_streams_a_storyboard(fam, tmp_path):
    preset = fam.preset
    model_dir = fam.make_folder(tmp_path / "model")
    cache, run1, run2 = tmp_path / "cache", tmp_path / "run1", tmp_path / "run2"
    videos = captioned_videos(tmp_path / "videos", fam.size, PROMPT)
    sizes = _sizes(fam.size)
    model = ["--preset", preset, "--model", str(model_dir)]
    assert main(["data", "prepare", *model, "--input", str(videos), "--out", str(cache), *sizes]) == 0

    # The cache holds the family's whole condition per shot (states zero past the prompt where there is a mask), so
    # training never loads a text encoder.
    sets = [a for a in (*sizes, *LORA_RUN_FLAGS) if a not in ("--set", "--no-progress")]
    cfg = load_config(preset, overrides=[*sets, f'model.path="{model_dir}"', f'data.cache="{cache}"'])
    rates = [Rate.parse(r) for r in cfg.history.rates]
    sampler = CacheSampler.for_run(
        cfg.data, cfg.codec, cfg.text, cfg.train.history_frames, "train", rates, [True] * len(rates)
    )
    cached = sampler.text_for(torch.tensor([[0, 0]]), 0, 1)
    fresh = encode_prompts(cfg.text, [PROMPT])
    for condition in (cached, fresh):
        assert {p for p in ("mask", "pooled") if getattr(condition, p) is not None} == set(fam.text_parts)
    torch.testing.assert_close(cached.states, fresh.states, atol=2e-3, rtol=0)  # float16 in the shard
    if fresh.pooled is not None:
        torch.testing.assert_close(cached.pooled, fresh.pooled, atol=2e-3, rtol=0)
    if fresh.mask is not None:
        assert torch.equal(cached.mask, fresh.mask) and 0 < int(fresh.mask.sum()) < fresh.mask.shape[1]
        assert cached.states[0, int(fresh.mask.sum()) :].abs().sum() == 0

    from_cache = ["--set", f'data.cache="{cache}"', *sizes, *LORA_RUN_FLAGS]
    assert main(["train", "--stage", "frame-query", *model, *from_cache, "--steps", "2", "--out", str(run1)]) == 0
    # stage II finds the base model through the stage-I checkpoint (no --model needed)
    stage2 = ["--stage", "ar", "--preset", preset, "--init-from", str(run1 / "final"), "--steps", "2"]
    assert main(["train", *stage2, *from_cache, "--set", "train.segment_frames=1", "--out", str(run2)]) == 0

    base = load_file(str(next((model_dir / "transformer").glob("*.safetensors"))))
    for run in (run1, run2):
        for folder in (run / "final", run / "last"):
            names = {p.name for p in folder.iterdir()}
            assert "transformer" not in names and not any(p.suffix == ".bin" for p in folder.iterdir())
            assert {"lora.safetensors", *fam.lora_files, "history_encoder.safetensors"} <= names
        # only what trained: LoRA tensors and the encoder, never a tensor of the frozen base
        keys = [k for f in (run / "final").glob("*.safetensors") for k in load_file(str(f))]
        assert keys and not set(keys) & set(base) and not any(k.removeprefix("transformer.") in base for k in keys)
        lora_keys = load_file(str(run / "final" / "lora.safetensors"))
        assert all(".lora_A." in k or ".lora_B." in k for k in lora_keys)
    portable = load_file(str(run2 / "final" / fam.lora_files[0]))
    assert portable and all(k.startswith(fam.portable_prefix) for k in portable)
    assert all(any(part in k for k in portable) for part in fam.portable_has)
    assert not any(part in k for k in portable for part in fam.portable_lacks)
    resolved = json.loads((run2 / "final" / "config.json").read_text())
    assert resolved["train"]["dit"] == "lora" and resolved["model"]["path"] == str(model_dir)
    assert resolved["train"]["stage"] == "ar" and resolved["model"]["dtype"] == "bfloat16"

    # Every LoRA file on the stock pipeline equals our stage-II model without history (float32 both).
    ours, _ = load_model(run2 / "final", dtype=torch.float32)
    ours.eval()
    assert any(p.abs().sum() > 0 for n, p in ours.backbone.named_parameters() if "lora_B" in n)  # it moved
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, ours.backbone.in_channels, 2, fam.latent, fam.latent, generator=g)
    t = torch.tensor([0.9])
    with torch.no_grad():
        expected = ours(x, t, fresh, None)
        for name in fam.lora_files:
            pipe = fam.pipeline.from_pretrained(model_dir, torch_dtype=torch.float32)
            pipe.load_lora_weights(str(run2 / "final" / name))
            stock = fam.stock_velocity(pipe.transformer.eval(), x, t, fresh, ours)
            torch.testing.assert_close(expected, stock, **fam.tolerance)

    # Generation streams a storyboard through the VAE: from nothing, from a video, from an image, then resumed longer.
    story = tmp_path / "story.json"
    story.write_text(json.dumps({"shots": [{"start": 0, "end": 2, "prompt": PROMPT}]}))
    out = tmp_path / "gen" / "x.mp4"
    generate = ["generate", "--preset", preset, "--checkpoint", str(run2 / "final"), "--storyboard", str(story)]
    generate += ["--steps", "2", "--segment-frames", str(fam.segment_frames), "--no-progress"]
    generate += ["--set", f"data.height={fam.size}", "--set", f"data.width={fam.size}"]
    first, later = fam.first_segment, fam.later_segment
    assert main([*generate, "--out", str(out)]) == 0
    assert count_frames(out) == first + later  # 2 segments of 1 s: the causal first frame, then whole groups
    assert (tmp_path / "gen" / "x.mp4.png").stat().st_size > 500
    log = [json.loads(line) for line in (tmp_path / "gen" / "x.mp4.segments.jsonl").read_text().splitlines()]
    assert [r["pixel_frames"] for r in log] == [first, later] and [r["start_s"] for r in log] == [0.0, 1.0]
    assert log[1]["context_tokens"] > 0  # the first segment's latents are history for the second
    settings = session_meta(Path(str(out) + ".session"))["settings"]
    assert {k: settings[k] for k in fam.settings} == fam.settings
    continued = tmp_path / "gen" / "y.mp4"
    assert main([*generate, "--out", str(continued), "--history", str(videos / "a.mp4")]) == 0
    assert count_frames(continued) == later + later  # after a video, every segment is whole groups
    still = tmp_path / "still.png"
    Image.fromarray(np.full((fam.size, fam.size, 3), 90, np.uint8)).save(still)
    from_image = tmp_path / "gen" / "z.mp4"
    assert main([*generate, "--out", str(from_image), "--image", str(still)]) == 0
    # TI2V-5B: the image is the first frame of the first segment (its own conditioning); others: one history block
    assert count_frames(from_image) == (first if fam.image_first_frame else later) + later
    story.write_text(json.dumps({"shots": [{"start": 0, "end": 3, "prompt": PROMPT}]}))
    assert main([*generate, "--out", str(out), "--resume", str(out) + ".session", *fam.resume_flags]) == 0
    assert count_frames(out) == first + later + later
