"""Adapter around the stock diffusers ``LTXVideoTransformer3DModel`` (LTX-Video 0.9.x) that accepts history context.

The forward is re-assembled from the stock submodules, as for Wan, so weights and LoRA keys stay diffusers-native:

1. target tokens: ``proj_in`` (a ``Linear``, not a Conv3d) over the latents packed as ``LTXPipeline._pack_latents``
   packs them (frame, row, column order; patch 1 × 1 × 1 in the released model);
2. RoPE from explicit (t, h, w) positions through the stock ``LTXVideoRotaryPosEmbed`` and its ``video_coords``
   argument: LTX-Video's RoPE is in pixel-and-seconds units (a token's index times the pipeline's
   ``rope_interpolation_scale`` = (VAE temporal factor / frame rate, VAE spatial factor, VAE spatial factor), divided
   by the base sizes 20 / 2048 / 2048), so a position becomes a coordinate by the same products; integer positions
   from 0 give the stock table bit for bit, fractional positions (history block centres) are allowed;
3. sequence = ``[context ; target]``, RoPE concatenated in the same order;
4. per-token timesteps ``(B, K + N)``, 0 for the clean context tokens: LTX's ``time_embed`` (AdaLN-single) and its
   blocks take one modulation per token natively (``LTXConditionPipeline`` uses it for its conditioning frames);
5. ``transformer_blocks`` (self-attention, text cross-attention with the -10000 mask bias, FFN) → ``norm_out`` with
   the per-token ``scale_shift_table`` modulation → ``proj_out``; the first K outputs are dropped and the rest
   unpacked as ``LTXPipeline._unpack_latents`` does.

**Patchify seam**: the history encoder's LR branch and the sliding window call :meth:`LTXBackbone.patch_embed` (the
pack + ``proj_in`` of step 1); the Large Patchifier is initialised from :attr:`LTXBackbone.patch_embedding`, a
``Conv3d`` view of ``proj_in`` (``backbones.base.PackedLinearEmbedding``) that shares its weights.

**RoPE scale**: the VAE's factors are read from the model folder's ``vae/config.json`` (the released VAE: 32× space,
8× time); the frame rate is :attr:`LTXBackbone.frame_rate`, ``LTXPipeline``'s ``frame_rate`` default (25), so a
LoRA used in the stock pipeline with its defaults sees what it was trained with.

The history KV cache, value RoPE and the block-causal context are refused by name: the LTX blocks have Wan's shape
(self-attention, then a text cross-attention), so they could follow Wan's processors, but none is written for LTX's
attention (RoPE over the whole inner width before the head split) yet.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from diffusers import AutoencoderKLLTXVideo, LTXVideoTransformer3DModel
from diffusers.pipelines.ltx.pipeline_ltx import LTXPipeline
from torch import nn

from tinyhistory.backbones.base import (
    ContextTokens,
    DiffusersBackbone,
    PackedLinearEmbedding,
    WithoutHistoryAttention,
)
from tinyhistory.flow import TIMESTEP_SCALE
from tinyhistory.sizing.facts import ReleasedDiT
from tinyhistory.text.condition import TextCondition

# The released LTX-Video VAE's factors (32× space, 8× time), for a DiT built without a model folder.
RELEASED_VAE_FACTORS = (32, 8)


def vae_factors(folder: Path) -> tuple[int, int]:
    """``(spatial, temporal)`` compression of the VAE in ``folder/vae`` (its ``config.json``, computed by diffusers'
    own ``AutoencoderKLLTXVideo`` on the meta device, no weights read), else the released VAE's."""
    config = folder / "vae" / "config.json"
    if not config.is_file():
        return RELEASED_VAE_FACTORS
    with torch.device("meta"):
        vae = AutoencoderKLLTXVideo.from_config(json.loads(config.read_text()))
    return vae.spatial_compression_ratio, vae.temporal_compression_ratio


class LTXBackbone(WithoutHistoryAttention, DiffusersBackbone):
    """``velocity = backbone(noisy_latents, t, text, context, frame_positions)``."""

    model_class = LTXVideoTransformer3DModel
    family = "ltx"
    title = "LTX-Video"
    # Why the history KV cache, value RoPE and the block-causal context are refused (see the module docstring).
    attention_gap = (
        "no attention processor is written for LTX's attention, RoPE over the whole inner width before the head split"
    )
    pipeline_sampler = "euler"  # LTXPipeline's FlowMatchEulerDiscreteScheduler, shifted by the token count
    # Pipelines whose folders hold an LTX-Video DiT (model_index.json ``_class_name``).
    pipelines = ("LTXPipeline", "LTXImageToVideoPipeline", "LTXConditionPipeline")
    layout = (
        "the Hub's diffusers layout of an LTX-Video 0.9.x model (e.g. Lightricks/LTX-Video): model_index.json, "
        "transformer/, vae/, text_encoder/ (T5), tokenizer/, scheduler/"
    )
    # LoRA on every attention projection (self and cross) and both FFN layers of every block; never ``proj_in``, the
    # time embedding, the caption projection, ``norm_out`` / ``proj_out`` or anything outside the blocks.
    lora_targets = (
        r"transformer_blocks\.\d+\.(attn1\.(to_q|to_k|to_v|to_out\.0)|attn2\.(to_q|to_k|to_v|to_out\.0)"
        r"|ff\.net\.0\.proj|ff\.net\.2)"
    )
    # The original LTX-Video layout (``diffusion_model.`` + the same module names), which ComfyUI and LTX-Video's
    # trainer use; ``LTXPipeline.load_lora_weights`` converts it back to diffusers keys itself.
    portable_lora_file = "lora_ltx_comfyui.safetensors"
    block_lists = ("transformer_blocks",)
    # LTXPipeline's ``frame_rate`` default: RoPE's time axis is in seconds at this rate (see the module docstring).
    frame_rate: float = 25.0

    def __init__(self, transformer: LTXVideoTransformer3DModel, vae_factors: tuple[int, int] = RELEASED_VAE_FACTORS):
        super().__init__()
        self.transformer = transformer
        cfg = transformer.config
        self.patch_size: tuple[int, int, int] = (cfg.patch_size_t, cfg.patch_size, cfg.patch_size)
        self.hidden_dim: int = cfg.num_attention_heads * cfg.attention_head_dim
        self.in_channels: int = cfg.in_channels
        self.vae_spatial, self.vae_temporal = vae_factors

    @classmethod
    def from_pretrained(cls, folder: str | Path, subfolder: str = "transformer", dtype: torch.dtype = torch.float32):
        """The DiT of a user's LTX-Video folder, with the RoPE scale of the folder's VAE."""
        backbone = super().from_pretrained(folder, subfolder, dtype)
        backbone.vae_spatial, backbone.vae_temporal = vae_factors(Path(folder))
        return backbone

    @classmethod
    def timestep_shift(cls, tokens: int, scheduler_config) -> float | None:
        """``mu`` for a segment of ``tokens`` DiT tokens where the scheduler config asks for dynamic shifting (the
        released folder's ``use_dynamic_shifting``), as ``LTXPipeline`` calls diffusers' ``calculate_shift`` from the
        config's base/max sequence lengths and shifts; None for a fixed shift (a shift given with ``--flow-shift``)."""
        if not scheduler_config.get("use_dynamic_shifting", False):
            return None
        from diffusers.pipelines.ltx.pipeline_ltx import calculate_shift  # (Flux's, copied; without Flux's imports)

        return calculate_shift(
            tokens,
            scheduler_config.get("base_image_seq_len", 256),
            scheduler_config.get("max_image_seq_len", 4096),
            scheduler_config.get("base_shift", 0.5),
            scheduler_config.get("max_shift", 1.15),
        )

    # -- construction ---------------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, b) -> LTXBackbone:
        """A randomly initialised DiT from the ``[backbone]`` table (``tinyhistory cost`` counts the preset's real
        sizes this way): ``text_dim`` is T5's width (``caption_channels``), the cross-attention runs at the DiT's
        width as in the released model, and the FFN is LTX's fixed 4× (``ffn_dim`` is not read)."""
        if b.patch_size[1] != b.patch_size[2]:
            raise ValueError(f"LTX-Video patches are square in space, got backbone.patch_size = {b.patch_size}")
        hidden = b.num_attention_heads * b.attention_head_dim
        return cls(
            LTXVideoTransformer3DModel(
                in_channels=b.in_channels,
                out_channels=b.in_channels,
                patch_size=b.patch_size[1],
                patch_size_t=b.patch_size[0],
                num_attention_heads=b.num_attention_heads,
                attention_head_dim=b.attention_head_dim,
                cross_attention_dim=hidden,
                num_layers=b.num_layers,
                caption_channels=b.text_dim,
            )
        )

    def portable_lora(self, state: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
        """The diffusers-keyed LoRA ``state`` under LTX-Video's original keys (``diffusion_model.<module>``), the
        layout ComfyUI reads and ``LTXPipeline.load_lora_weights`` converts; no ``.alpha`` (alpha = rank, scale 1,
        what both assume without one)."""
        del alpha
        return {"diffusion_model." + k.removeprefix("transformer."): v for k, v in state.items()}

    # -- pieces ---------------------------------------------------------------------------------------------
    def blank_text(self, batch: int, tokens: int, device: str | torch.device = "cpu") -> TextCondition:
        """An uninitialised condition of the shapes this DiT reads (T5 states and their mask), for FLOP counts."""
        cfg = self.transformer.config
        return TextCondition(
            torch.empty(batch, tokens, cfg.caption_channels, device=device),
            torch.ones(batch, tokens, dtype=torch.long, device=device),
        )

    @property
    def patch_embedding(self) -> PackedLinearEmbedding:
        """``proj_in`` seen as the equivalent Conv3d (the Large Patchifier is initialised from it)."""
        return PackedLinearEmbedding(self.transformer.proj_in, self.patch_size)

    @property
    def blocks(self) -> nn.ModuleList:
        return self.transformer.transformer_blocks

    def pack(self, latents: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` → ``(B, N, C·pt·ph·pw)`` tokens, as ``LTXPipeline`` packs them (floor on odd sizes)."""
        pt, ph, pw = self.patch_size
        t, h, w = latents.shape[2] // pt * pt, latents.shape[3] // ph * ph, latents.shape[4] // pw * pw
        return LTXPipeline._pack_latents(latents[:, :, :t, :h, :w], ph, pt)

    def patch_embed(self, latents: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` → ``(B, D, T/pt, H/ph, W/pw)``: the DiT's own pack + ``proj_in`` (step 1 of the
        forward), as a grid for the LR branch and the sliding window."""
        pt, ph, pw = self.patch_size
        grid = (latents.shape[2] // pt, latents.shape[3] // ph, latents.shape[4] // pw)
        tokens = self.transformer.proj_in(self.pack(latents))  # (B, N, D)
        return tokens.transpose(1, 2).unflatten(2, grid)

    def rotary(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE (cos, sin), each ``(B, S, hidden_dim)``, for explicit ``(B, S, 3)`` positions in DiT-token units.

        Coordinates are made as the stock ``_prepare_video_coords`` makes them from the pipeline's
        ``rope_interpolation_scale`` (float32, the same products in the same order), then the stock
        ``LTXVideoRotaryPosEmbed`` turns them into the table, so integer positions give the stock table bit for bit.
        """
        pt, ph, pw = self.patch_size
        scale = (self.vae_temporal / self.frame_rate, self.vae_spatial, self.vae_spatial)
        pos = positions.to(torch.float32)
        coords = torch.stack(
            [pos[..., 0] * scale[0] * pt, pos[..., 1] * scale[1] * ph, pos[..., 2] * scale[2] * pw], dim=1
        )  # (B, 3, S)
        return self.transformer.rope(pos, video_coords=coords)

    # -- forward --------------------------------------------------------------------------------------------
    def forward(
        self,
        latents: torch.Tensor,
        t: torch.Tensor,
        text: TextCondition,
        context: ContextTokens | None = None,
        frame_positions: torch.Tensor | None = None,
        after_block: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
        context_cache=None,
        target_offsets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict the velocity of the target latents.

        latents: ``(B, C, T, H, W)`` noisy targets; t: ``(B,)`` flow time in [0, 1] (or ``(B, T)``, one per frame);
        text: T5 ``states`` ``(B, L, caption_channels)`` and their ``mask`` ``(B, L)`` (all tokens if absent);
        context: optional history tokens; frame_positions: ``(B, T)`` temporal position of each target frame
        (default ``0 … T−1``); after_block: ``f(i, tokens) → tokens`` applied after block ``i`` to the whole
        ``(B, K + N, D)`` sequence (the cross-attention enhancement); target_offsets: ``(B, N, D)`` added to the
        target tokens after ``proj_in`` (the block phase). Returns ``(B, C, T, H, W)``.
        """
        self.refuse_context_cache(context_cache)
        if context is not None and context.visible is not None:
            raise ValueError("hidden context tokens (the stacked tier layout) are not supported for LTX-Video")
        tr = self.transformer
        b = latents.shape[0]
        pt, ph, pw = self.patch_size
        (grid_t, grid_h, grid_w), target_pos = self.target_positions(latents, frame_positions)  # (B, N, 3)

        dtype = latents.dtype
        tokens = tr.proj_in(self.pack(latents))  # (B, N, D)
        if target_offsets is not None:  # block phase (history/phase.py): where each target sits in a history block
            tokens = tokens + target_offsets.to(tokens.dtype)
        n = tokens.shape[1]
        timestep = (t * TIMESTEP_SCALE).to(dtype)
        if timestep.ndim == 2:  # one time per target frame: per token (B, N)
            timestep = timestep[:, :, None].expand(b, grid_t, grid_h * grid_w).reshape(b, n)
        k = context.num_tokens if context is not None else 0
        positions = target_pos
        if k:
            tokens = torch.cat([context.tokens.to(tokens.dtype), tokens], dim=1)
            positions = torch.cat([context.positions.to(target_pos.dtype), target_pos], dim=1)
            # Per-token timesteps: clean history at 0, targets at t. (B, K + N)
            targets_t = timestep if timestep.ndim == 2 else timestep[:, None].expand(b, n)
            timestep = torch.cat([timestep.new_zeros(b, k), targets_t], dim=1)
        rotary_emb = self.rotary(positions)

        # The stock text mask: a (B, 1, L) bias, -10000 on padding (in the latents' dtype, as the stock forward).
        mask = None
        if text.mask is not None:
            mask = ((1 - text.mask.to(latents.device, dtype)) * -10000.0).unsqueeze(1)
        # AdaLN-single: one modulation per sample (B, 1, ·) or per token (B, K + N, ·).
        temb, embedded = tr.time_embed(timestep.flatten(), batch_size=b, hidden_dtype=tokens.dtype)
        temb = temb.view(b, -1, temb.size(-1))
        embedded = embedded.view(b, -1, embedded.size(-1))
        text_states = tr.caption_projection(text.states.to(dtype)).view(b, -1, tokens.size(-1))

        checkpointing = torch.is_grad_enabled() and tr.gradient_checkpointing
        for i, block in enumerate(tr.transformer_blocks):
            if checkpointing:
                tokens = tr._gradient_checkpointing_func(block, tokens, text_states, temb, rotary_emb, mask)
            else:
                tokens = block(tokens, text_states, temb, rotary_emb, mask)
            if after_block is not None:
                tokens = after_block(i, tokens)

        # Drop the context outputs before the output head: only target tokens are predicted.
        tokens = tokens[:, k:]
        embedded = embedded[:, k:]  # (per token whenever there is context; a (B, 1, D) embedding stays)
        scale_shift = tr.scale_shift_table[None, None] + embedded[:, :, None]
        shift, scale = scale_shift[:, :, 0], scale_shift[:, :, 1]
        tokens = tr.norm_out(tokens) * (1 + scale) + shift
        out = tr.proj_out(tokens)  # (B, N, C·pt·ph·pw)
        return LTXPipeline._unpack_latents(out, grid_t, grid_h, grid_w, ph, pt)

    # -- sizing facts (sizing/ reads these) ----------------------------------------------------------------------
    # Lightricks/LTX-Video (0.9.x 2B, diffusers layout) transformer/config.json: diffusers'
    # scripts/convert_ltx_to_diffusers.py (get_transformer_config, every 2B version), which is also the
    # LTXVideoTransformer3DModel defaults: 32 heads × 64 = 2048, 28 blocks, patch 1×1×1 over 128 latent channels,
    # cross-attention at 2048, T5-XXL captions 4096 (1.92B parameters).
    released = {
        "ltx-video": ReleasedDiT(
            "LTX-Video 0.9 (2B)",
            {
                "_class_name": "LTXVideoTransformer3DModel",
                "activation_fn": "gelu-approximate",
                "attention_bias": True,
                "attention_head_dim": 64,
                "attention_out_bias": True,
                "caption_channels": 4096,
                "cross_attention_dim": 2048,
                "in_channels": 128,
                "norm_elementwise_affine": False,
                "norm_eps": 1e-06,
                "num_attention_heads": 32,
                "num_layers": 28,
                "out_channels": 128,
                "patch_size": 1,
                "patch_size_t": 1,
                "qk_norm": "rms_norm_across_heads",
            },
            False,
            "diffusers scripts/convert_ltx_to_diffusers.py (the Lightricks/LTX-Video 2B configs)",
        )
    }
