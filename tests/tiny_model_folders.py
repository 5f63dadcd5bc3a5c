"""Tiny random-weight Wan model folders in the Hugging Face diffusers repo layout, written offline.

Code that takes a model *folder* (``WanPipeline.from_pretrained``, ``load_lora_weights`` on a fresh pipeline, the
``from_pretrained(folder, subfolder="transformer")`` path) can only be tested against a folder; nothing may be
downloaded, so these functions build one from the real diffusers/transformers classes at diffusers' own test sizes
and write it with the pipeline's own ``save_pretrained`` (``model_index.json``, ``transformer/``, ``vae/``,
``text_encoder/``, ``tokenizer/``, ``scheduler/``), exactly the layout of the Hub repos:

- ``wan21_t2v_folder``: Wan 2.1 T2V (16 latent channels, 8× space, 4× time VAE);
- ``wan22_ti2v_folder``: Wan 2.2 TI2V-5B (48 latent channels, 16× space VAE, ``expand_timesteps=True``);
- ``wan22_a14b_folder``: Wan 2.2 A14B (two transformers, ``boundary_ratio=0.875``, Wan 2.1 VAE);
- ``hunyuan_folder``: HunyuanVideo (Llama + CLIP text encoders, ``text_encoder_2/`` and ``tokenizer_2/`` too);
- ``ltx_folder``: LTX-Video 0.9.x (a 32× space, 8× time VAE as released, T5, the dynamically shifted Euler scheduler).

Every module is seeded, so the same call writes the same weights (the folders are reproducible); each call takes
well under a second on a CPU.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
from tiny_text_models import save_hunyuan_text, save_t5, save_umt5
from tiny_vaes import wan22_tiny_vae
from transformers import AutoTokenizer, CLIPTextModel, LlamaModel, T5EncoderModel, UMT5EncoderModel


def tiny_wan_transformer(channels: int, seed: int, text_dim: int) -> WanTransformer3DModel:
    """A 2-block Wan DiT (hidden 2 heads × 12 = 24) with the real Wan 2.x block structure.

    ``channels`` is the latent width (16 for Wan 2.1 / A14B, 48 for TI2V-5B); ``text_dim`` must equal the text
    encoder's ``d_model`` because the pipeline feeds the UMT5 hidden states straight into ``text_embedder``.
    """
    torch.manual_seed(seed)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=channels,
        out_channels=channels,
        text_dim=text_dim,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    ).eval()


def wan21_tiny_vae(seed: int = 0) -> AutoencoderKLWan:
    """Wan 2.1's VAE layout (16 latent channels, 8× space, 4× time) at diffusers' test size."""
    torch.manual_seed(seed)
    return AutoencoderKLWan(
        base_dim=3,
        z_dim=16,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
    ).eval()


def _flow_scheduler(flow_shift: float) -> UniPCMultistepScheduler:
    """The scheduler the Wan repos ship: UniPC over flow-matching sigmas with the model's shift."""
    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=flow_shift)


def _tiny_umt5() -> tuple[UMT5EncoderModel, AutoTokenizer]:
    """The tiny UMT5 encoder + tokenizer of ``tiny_text_models.save_umt5``, written and loaded back.

    Going through ``save_umt5`` (rather than building a model here) keeps one definition of the tiny UMT5 for
    these folders and the text-encoder tests.
    """
    with tempfile.TemporaryDirectory() as tmp:
        save_umt5(Path(tmp), seed=0, layout="repo")
        text_encoder = UMT5EncoderModel.from_pretrained(Path(tmp) / "text_encoder").eval()
        tokenizer = AutoTokenizer.from_pretrained(Path(tmp) / "tokenizer")
    return text_encoder, tokenizer


def _save_pipeline(path: Path, channels: int, experts: int, vae: AutoencoderKLWan, flow_shift: float, **config) -> Path:
    """Build a ``WanPipeline`` (``experts`` = 1 or 2 DiTs of ``channels`` latent channels) and save it to ``path``.

    The DiTs' ``text_dim`` is the encoder's ``d_model``: the pipeline feeds the UMT5 hidden states straight into
    ``condition_embedder.text_embedder``. Expert ``i`` is seeded with ``i``, so the two A14B experts differ.
    """
    text_encoder, tokenizer = _tiny_umt5()
    text_dim = text_encoder.config.d_model
    transformers = [tiny_wan_transformer(channels, seed=i, text_dim=text_dim) for i in range(experts)]
    pipe = WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=_flow_scheduler(flow_shift),
        transformer=transformers[0],
        transformer_2=transformers[1] if experts == 2 else None,
        **config,
    )
    path.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(path)
    return path


def wan21_t2v_folder(path: Path) -> Path:
    """A Wan 2.1 T2V-shaped diffusers repo at ``path`` (transformer in/out 16 channels, flow shift 3.0)."""
    return _save_pipeline(path, channels=16, experts=1, vae=wan21_tiny_vae(), flow_shift=3.0)


def wan22_ti2v_folder(path: Path) -> Path:
    """A Wan 2.2 TI2V-5B-shaped repo: 48-channel DiT, the 16×-space residual VAE, ``expand_timesteps=True``.

    ``expand_timesteps`` is what makes the real TI2V pipeline give per-token timesteps (0 on the conditioning
    frame), so it is saved into ``model_index.json`` as in the Hub repo.
    """
    return _save_pipeline(path, channels=48, experts=1, vae=wan22_tiny_vae(), flow_shift=5.0, expand_timesteps=True)


def wan22_a14b_folder(path: Path) -> Path:
    """A Wan 2.2 A14B-shaped repo: high-noise ``transformer`` + low-noise ``transformer_2``, boundary 0.875.

    The experts have different seeds (0 and 1), so a test can tell which one ran.
    """
    return _save_pipeline(path, channels=16, experts=2, vae=wan21_tiny_vae(), flow_shift=3.0, boundary_ratio=0.875)


def hunyuan_folder(path: Path) -> Path:
    """A HunyuanVideo-shaped diffusers repo at ``path``: a 1 + 1-block MM-DiT (2 heads × 10, RoPE axes 2/4/4,
    guidance-embedded, 4 latent channels), the HunyuanVideo VAE at diffusers' test size, the tiny Llama (text 16)
    and CLIP (pooled 8) of ``tiny_text_models.save_hunyuan_text`` and the flow-matching Euler scheduler (shift 7).
    """
    from diffusers import (
        AutoencoderKLHunyuanVideo,
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideoPipeline,
        HunyuanVideoTransformer3DModel,
    )

    with tempfile.TemporaryDirectory() as tmp:
        save_hunyuan_text(Path(tmp), seed=0)
        text_encoder = LlamaModel.from_pretrained(Path(tmp) / "text_encoder").eval()
        tokenizer = AutoTokenizer.from_pretrained(Path(tmp) / "tokenizer")
        text_encoder_2 = CLIPTextModel.from_pretrained(Path(tmp) / "text_encoder_2").eval()
        tokenizer_2 = AutoTokenizer.from_pretrained(Path(tmp) / "tokenizer_2")
    torch.manual_seed(0)
    transformer = HunyuanVideoTransformer3DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=10,
        num_layers=1,
        num_single_layers=1,
        num_refiner_layers=1,
        patch_size=1,
        patch_size_t=1,
        guidance_embeds=True,
        text_embed_dim=text_encoder.config.hidden_size,
        pooled_projection_dim=text_encoder_2.config.hidden_size,
        rope_axes_dim=(2, 4, 4),
    ).eval()
    torch.manual_seed(0)
    vae = AutoencoderKLHunyuanVideo(
        latent_channels=4, block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4
    ).eval()
    pipe = HunyuanVideoPipeline(
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
    )
    path.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(path)
    return path


# The tiny LTX DiT's text width is the tiny T5's d_model; its VAE has the released factors (32× space, 8× time).
LTX_TEXT_DIM = 16


def ltx_folder(path: Path, timestep_conditioning: bool = False) -> Path:
    """An LTX-Video 0.9.x-shaped diffusers repo at ``path``: a 2-block DiT (2 heads × 12, patch 1, 8 latent
    channels, T5 width 16), the LTX VAE at test width with the released geometry (patch 4 and three space-time
    downsamplings: 32× space, 8× time, causal encoder, non-causal decoder; ``timestep_conditioning`` as 0.9.1+),
    the tiny T5 of ``tiny_text_models.save_t5`` and the released scheduler config (flow-matching Euler with dynamic
    shifting: base 0.95 at 1024 tokens, max 2.05 at 4096, terminal 0.1)."""
    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXPipeline,
        LTXVideoTransformer3DModel,
    )

    with tempfile.TemporaryDirectory() as tmp:
        save_t5(Path(tmp), seed=0)
        text_encoder = T5EncoderModel.from_pretrained(Path(tmp) / "text_encoder").eval()
        tokenizer = AutoTokenizer.from_pretrained(Path(tmp) / "tokenizer")
    torch.manual_seed(0)
    transformer = LTXVideoTransformer3DModel(
        in_channels=8,
        out_channels=8,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=2,
        attention_head_dim=12,
        cross_attention_dim=24,
        num_layers=2,
        caption_channels=LTX_TEXT_DIM,
    ).eval()
    torch.manual_seed(0)
    scaling = (True, True, True, False)
    vae = AutoencoderKLLTXVideo(
        latent_channels=8,
        block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=scaling,
        decoder_spatio_temporal_scaling=scaling,
        decoder_inject_noise=(False,) * 5,
        upsample_residual=(False,) * 4,
        upsample_factor=(1,) * 4,
        timestep_conditioning=timestep_conditioning,
        patch_size=4,
        patch_size_t=1,
    ).eval()
    # Per-channel statistics that are not the identity, so a codec that skipped them would be caught.
    vae.latents_mean.copy_(torch.linspace(-0.2, 0.3, 8))
    vae.latents_std.copy_(torch.linspace(0.7, 1.4, 8))
    scheduler = FlowMatchEulerDiscreteScheduler(
        base_image_seq_len=1024,
        base_shift=0.95,
        max_image_seq_len=4096,
        max_shift=2.05,
        shift_terminal=0.1,
        use_dynamic_shifting=True,
    )
    pipe = LTXPipeline(
        scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer
    )
    path.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(path)
    return path
