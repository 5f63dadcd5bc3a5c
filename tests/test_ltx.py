"""LTX-Video as the third model family, on a tiny random-weight folder written by ``LTXPipeline.save_pretrained``
(the shared backbone contract runs it too, in test_backbone_contract.py):

* the codec normalises and denormalises as ``LTXPipeline`` does (``latents_mean`` / ``latents_std`` buffers,
  ``scaling_factor``) and decodes with the pipeline's default decode timestep where the VAE is timestep-conditioned;
* the T5 encoder gives what ``LTXPipeline.encode_prompt`` gives (states, mask);
* the patchify seam: ``patch_embedding`` is a Conv3d view of ``proj_in`` (shared weights) that equals the DiT's own
  pack + ``proj_in``, and the Large Patchifier is initialised from it;
* golden: with no history our first segment equals ``LTXPipeline``'s (same folder, seed, steps, guidance).

End to end through the CLI (a stock ``LTXPipeline.load_lora_weights`` of our LoRA included):
test_families_end_to_end.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import LTXPipeline
from tiny_model_folders import ltx_folder

from tinyhistory.assemble import HistoryDiT, build_codec
from tinyhistory.backbones.base import PackedLinearEmbedding
from tinyhistory.codecs import Codec
from tinyhistory.codecs.ltx import LTXVAECodec
from tinyhistory.config import HistoryConfig, ModelConfig, load_config
from tinyhistory.flow import FlowMatchingSchedule
from tinyhistory.generate.run import session_setup
from tinyhistory.generate.session import GenerationSession, SamplingSettings, make_scheduler, sampling_recipe
from tinyhistory.registry import BACKBONES, HISTORY_METHODS
from tinyhistory.text.cache import encode_prompts
from tinyhistory.text.condition import TextCondition
from tinyhistory.text.t5 import T5TextEncoder

PROMPT = "a cat walks on the grass"


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return ltx_folder(tmp_path_factory.mktemp("ltx") / "model")


def _pixels(*shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(0)) * 2 - 1


@pytest.mark.parametrize("timestep_conditioning", [False, True], ids=["0.9.0", "0.9.1+"])
def test_codec_normalises_and_decodes_as_the_pipeline(timestep_conditioning, tmp_path):
    model = ltx_folder(tmp_path / "model", timestep_conditioning=timestep_conditioning)
    codec = LTXVAECodec.from_pretrained(model)
    vae = codec.vae
    assert isinstance(codec, Codec) and codec.framewise is False
    assert (codec.latent_channels, codec.spatial_factor, codec.temporal_factor, codec.stream_context) == (8, 32, 8, 2)
    pixels = _pixels(1, 3, 17, 64, 96)
    z = codec.encode(pixels)
    assert z.shape == (1, 8, 3, 2, 3)  # 1 + 8k frames → 1 + k latent frames, 32× smaller
    with torch.no_grad():
        raw = vae.encode(pixels).latent_dist.mode()
        by_hand = LTXPipeline._normalize_latents(raw, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
        denormalised = LTXPipeline._denormalize_latents(z, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
        timestep = torch.zeros(1) if timestep_conditioning else None  # LTXPipeline's default decode_timestep
        decoded = vae.decode(denormalised, timestep).sample.clamp(-1, 1)
    assert torch.equal(z, by_hand) and not torch.equal(z, raw)  # the folder's mean/std are not the identity
    frames = codec.decode(z)
    assert frames.shape == (1, 3, 17, 64, 96) and torch.equal(frames, decoded)
    with pytest.raises(ValueError, match="needs 1 \\+ 8k frames .* got 5 frames"):
        codec.encode(_pixels(1, 3, 5, 64, 64))
    with pytest.raises(ValueError, match="not divisible by the LTX-Video VAE's factor 32"):
        codec.encode(_pixels(1, 3, 1, 48, 64))
    with pytest.raises(ValueError, match="expected latents \\(B, 8, T, H, W\\)"):
        codec.decode(torch.zeros(1, 4, 1, 2, 2))
    cfg = load_config("ltx-video", overrides=[f'model.path="{model}"'])
    assert isinstance(build_codec(cfg.codec), LTXVAECodec)  # codec.path defaults to the model folder


def test_t5_encoder_equals_the_pipelines_prompt_encoding(folder):
    pipe = LTXPipeline.from_pretrained(folder)
    encoder = T5TextEncoder(folder, max_tokens=12)
    prompts = [PROMPT, "a dog runs in the park with a red ball"]
    with torch.no_grad():  # as LTXPipeline.__call__ runs it (with autograd on, T5 takes other kernels: ~5e-7 apart)
        states, mask, _, _ = pipe.encode_prompt(prompts, do_classifier_free_guidance=False, max_sequence_length=12)
    ours_states, ours_mask = encoder.encode_prompt(prompts)
    assert torch.equal(ours_states, states) and torch.equal(ours_mask.bool(), mask)
    condition = encoder.encode_condition(prompts)
    assert torch.equal(condition.mask, ours_mask) and 0 < int(ours_mask[0].sum()) < 12
    assert torch.equal(condition.states, states * mask[..., None])  # zero on the padding the DiT masks out
    cfg = load_config("ltx-video", overrides=[f'model.path="{folder}"'])
    assert cfg.text.kind == "t5" and cfg.text.path == str(folder)


def test_patch_embedding_is_a_view_of_proj_in_and_feeds_the_large_patchifier(folder):
    backbone = BACKBONES.get("ltx").from_pretrained(folder).eval()
    view = backbone.patch_embedding
    proj_in = backbone.transformer.proj_in
    assert isinstance(view, PackedLinearEmbedding) and not list(view.parameters())  # owns no copy
    assert view.weight.data_ptr() == proj_in.weight.data_ptr() and view.bias is proj_in.bias
    assert (view.kernel_size, view.in_channels, view.out_channels) == ((1, 1, 1), 8, backbone.hidden_dim)
    latents = torch.randn(2, 8, 3, 4, 6)
    with torch.no_grad():
        grid = backbone.patch_embed(latents)  # the DiT's own pack + proj_in
        torch.testing.assert_close(view(latents), grid, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(grid.flatten(2).transpose(1, 2), proj_in(LTXPipeline._pack_latents(latents)))
        patchifier = HISTORY_METHODS.get("large_patchifier")("large_patchifier", "2x2x1", HistoryConfig(), backbone)
        tokens = patchifier(latents)
        # initialised to embed each 2×2 block's average latent
        average = torch.nn.functional.avg_pool3d(latents, (1, 2, 2))
        expected = backbone.patch_embed(average).flatten(2).transpose(1, 2)
    assert tokens.tokens.shape == (2, 3 * 2 * 3, backbone.hidden_dim)
    torch.testing.assert_close(tokens.tokens, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("timestep_conditioning", "guidance"), [(False, 3.0), (True, 3.0), (False, 1.0)], ids=["0.9.0", "0.9.1+", "no-cfg"]
)
def test_first_segment_equals_the_stock_pipeline(timestep_conditioning, guidance, tmp_path):
    model = ltx_folder(tmp_path / "model", timestep_conditioning=timestep_conditioning)
    cfg = load_config(
        "ltx-video",
        overrides=[
            f'model.path="{model}"',
            'model.dtype="float32"',
            'history.method="no_history"',
            "data.height=128",
            "data.width=128",
        ],
    )
    settings = SamplingSettings(sampler="euler", steps=3, guidance=guidance, segment_frames=3)
    session = GenerationSession(
        HistoryDiT.from_config(cfg),
        session_setup(cfg),
        build_codec(cfg.codec),
        lambda p: encode_prompts(cfg.text, p),
        settings,
    )
    frames = session.generate_segment(PROMPT)
    assert frames.shape == (1 + 8 * 2, 128, 128, 3)  # 3 latent frames from nothing: 1 + 8·2 frames

    pipe = LTXPipeline.from_pretrained(model)
    call = dict(prompt=PROMPT, negative_prompt="", height=128, width=128, num_frames=17, num_inference_steps=3)
    call |= dict(guidance_scale=guidance)  # the pipeline's defaults otherwise: frame_rate 25, 128 tokens, decode t 0
    packed = pipe(**call, generator=torch.Generator().manual_seed(0), output_type="latent").frames
    latents = LTXPipeline._unpack_latents(packed, 3, 4, 4)  # "latent" output: packed and still normalised
    video = pipe(**call, generator=torch.Generator().manual_seed(0), output_type="np").frames[0]  # (T, H, W, 3)
    difference = np.abs(frames.astype(np.float64) - np.round(video * 255)).max()
    if guidance == 1.0:  # one branch: bit for bit
        assert torch.equal(session.latents, latents) and difference == 0
    else:  # the CFG halves are batched the other way round ([text; empty] here, [empty; text] there): ~3e-7 apart
        torch.testing.assert_close(session.latents, latents, atol=1e-5, rtol=1e-5)
        assert difference <= 1


def test_the_folders_dynamic_shift_follows_the_token_count_unless_a_shift_is_given(folder):
    adapter = BACKBONES.get("ltx")
    recipe = adapter.sampling_recipe(folder)
    assert recipe == sampling_recipe(adapter, ModelConfig(path=str(folder)))
    assert recipe.scheduler == json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert recipe.sampler == "euler" and recipe.second_expert is None and not recipe.first_frame
    dynamic = make_scheduler(SamplingSettings(), recipe)
    assert dynamic.config.use_dynamic_shifting
    sigmas = []
    for tokens in (990, 4096):
        FlowMatchingSchedule(dynamic, 4, "cpu", adapter.timestep_shift(tokens, dynamic.config))
        sigmas.append(dynamic.sigmas[1].item())
    assert sigmas[0] < sigmas[1]  # more tokens, more shift towards noise (LTXPipeline's mu)
    fixed = make_scheduler(SamplingSettings(flow_shift=3.0), recipe)  # --flow-shift 3
    assert not fixed.config.use_dynamic_shifting and fixed.config.shift == 3.0
    assert adapter.timestep_shift(990, fixed.config) is None  # no mu needed
    assert len(FlowMatchingSchedule(fixed, 4, "cpu").timesteps) == 4


def test_the_preset_declares_the_released_sizes_for_cost():
    """`tinyhistory cost` builds the preset's DiT from its [backbone] table on the meta device: the released 2B."""
    cfg = load_config("ltx-video")
    with torch.device("meta"):
        backbone = BACKBONES.get("ltx").from_config(cfg.backbone)
    assert sum(p.numel() for p in backbone.parameters()) == 1_923_385_472
    assert (backbone.in_channels, backbone.hidden_dim, backbone.patch_size) == (128, 2048, (1, 1, 1))
    text = backbone.blank_text(1, cfg.text.max_tokens, "meta")
    assert isinstance(text, TextCondition) and text.states.shape == (1, 128, 4096)
