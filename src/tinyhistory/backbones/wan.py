"""Adapter around the stock diffusers ``WanTransformer3DModel`` that accepts history context tokens.

The forward is re-assembled from the stock submodules (DESIGN.md, "Integration recipes"), so weights and LoRA keys
stay diffusers-native:

1. target tokens: ``patch_embedding(x).flatten(2).transpose(1, 2)`` (frame, row, column order);
2. RoPE from explicit (t, h, w) positions with the axis split of ``WanRotaryPosEmbed``; integer positions from 0
   reproduce the stock table exactly, fractional positions (history block centres) are allowed;
3. sequence = ``[context ; target]``, RoPE concatenated in the same order;
4. per-token timesteps ``(B, K + N)``, 0 for context tokens, through ``condition_embedder``;
5. ``blocks`` → ``norm_out`` + modulation → ``proj_out``; the first K outputs are dropped before unpatchify.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import WanTransformer3DModel
from diffusers.models.embeddings import get_1d_rotary_pos_embed
from torch import nn

from tinyhistory.backbones.base import ContextTokens, grid_positions
from tinyhistory.flow import TIMESTEP_SCALE


class WanBackbone(nn.Module):
    """``velocity = backbone(noisy_latents, t, text, context, frame_positions)``."""

    def __init__(self, transformer: WanTransformer3DModel):
        super().__init__()
        self.transformer = transformer
        cfg = transformer.config
        self.patch_size: tuple[int, int, int] = tuple(cfg.patch_size)
        self.hidden_dim: int = cfg.num_attention_heads * cfg.attention_head_dim
        self.in_channels: int = cfg.in_channels
        rope = transformer.rope
        self._rope_dims = (rope.t_dim, rope.h_dim, rope.w_dim)
        self._rope_theta = 10000.0

    # -- pieces ---------------------------------------------------------------------------------------------
    def patch_embed(self, latents: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` → ``(B, D, T/pt, H/ph, W/pw)`` with the DiT's own first layer (floor on odd sizes)."""
        return self.transformer.patch_embedding(latents)

    def rotary(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE (cos, sin), each ``(B, S, 1, head_dim)``, for explicit ``(B, S, 3)`` positions."""
        b, s, _ = positions.shape
        flat = positions.reshape(b * s, 3).to(torch.float64)
        cos_parts, sin_parts = [], []
        for axis, dim in enumerate(self._rope_dims):
            cos, sin = get_1d_rotary_pos_embed(
                dim,
                flat[:, axis],
                self._rope_theta,
                use_real=True,
                repeat_interleave_real=True,
                freqs_dtype=torch.float64,
            )
            cos_parts.append(cos)
            sin_parts.append(sin)
        cos = torch.cat(cos_parts, dim=1).reshape(b, s, 1, -1)
        sin = torch.cat(sin_parts, dim=1).reshape(b, s, 1, -1)
        return cos, sin

    # -- forward --------------------------------------------------------------------------------------------
    def forward(
        self,
        latents: torch.Tensor,
        t: torch.Tensor,
        text: torch.Tensor,
        context: ContextTokens | None = None,
        frame_positions: torch.Tensor | None = None,
        after_block: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Predict the velocity of the target latents.

        latents: ``(B, C, T, H, W)`` noisy targets; t: ``(B,)`` flow time in [0, 1]; text: ``(B, L, text_dim)``;
        context: optional history tokens; frame_positions: ``(B, T)`` temporal position of each target frame
        (default ``0 … T−1``); after_block: ``f(i, tokens) → tokens`` applied after DiT block ``i`` to the whole
        ``(B, K + N, D)`` sequence (the cross-attention enhancement). Returns ``(B, C, T, H, W)``.
        """
        tr = self.transformer
        b, _, frames, height, width = latents.shape
        pt, ph, pw = self.patch_size
        grid_t, grid_h, grid_w = frames // pt, height // ph, width // pw
        if frame_positions is None:
            frame_positions = torch.arange(grid_t, device=latents.device).expand(b, grid_t)
        target_pos = grid_positions(frame_positions, grid_h, grid_w)  # (B, N, 3)

        tokens = tr.patch_embedding(latents).flatten(2).transpose(1, 2).contiguous()  # (B, N, D)
        n = tokens.shape[1]
        timestep = (t * TIMESTEP_SCALE).to(latents.dtype)
        if context is not None and context.num_tokens > 0:
            k = context.num_tokens
            tokens = torch.cat([context.tokens.to(tokens.dtype), tokens], dim=1)
            positions = torch.cat([context.positions.to(target_pos.dtype), target_pos], dim=1)
            # Per-token timesteps: clean history at 0, targets at t. (B, K + N)
            timestep = torch.cat([timestep.new_zeros(b, k), timestep[:, None].expand(b, n)], dim=1)
        else:
            k = 0
            positions = target_pos
        rotary_emb = self.rotary(positions)

        per_token = timestep.ndim == 2
        temb, timestep_proj, text_states, _ = tr.condition_embedder(
            timestep.flatten() if per_token else timestep,
            text,
            timestep_seq_len=timestep.shape[1] if per_token else None,
        )
        timestep_proj = timestep_proj.unflatten(2 if per_token else 1, (6, -1))

        checkpointing = torch.is_grad_enabled() and tr.gradient_checkpointing
        for i, block in enumerate(tr.blocks):
            if checkpointing:
                tokens = tr._gradient_checkpointing_func(block, tokens, text_states, timestep_proj, rotary_emb)
            else:
                tokens = block(tokens, text_states, timestep_proj, rotary_emb)
            if after_block is not None:
                tokens = after_block(i, tokens)

        # Drop the context outputs before the output head: only target tokens are predicted.
        tokens = tokens[:, k:]
        if per_token:
            temb = temb[:, k:]
            shift, scale = (tr.scale_shift_table.unsqueeze(0) + temb.unsqueeze(2)).chunk(2, dim=2)
            shift, scale = shift.squeeze(2), scale.squeeze(2)
        else:
            shift, scale = (tr.scale_shift_table + temb.unsqueeze(1)).chunk(2, dim=1)
        tokens = (tr.norm_out(tokens.float()) * (1 + scale) + shift).type_as(tokens)
        tokens = tr.proj_out(tokens)  # (B, N, pt·ph·pw·C)

        out = tokens.reshape(b, grid_t, grid_h, grid_w, pt, ph, pw, -1)
        out = out.permute(0, 7, 1, 4, 2, 5, 3, 6)
        return out.flatten(6, 7).flatten(4, 5).flatten(2, 3)
