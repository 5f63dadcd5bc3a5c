"""Adapter around the stock diffusers ``HunyuanVideoTransformer3DModel`` that accepts history context tokens.

The forward is re-assembled from the stock submodules, the way diffusers' ``HunyuanVideoFramepackTransformer3DModel``
prepends its clean-history latents, so weights and LoRA keys stay diffusers-native and no block is forked:

1. target tokens: ``x_embedder(x)`` (frame, row, column order);
2. text: ``context_embedder`` (the token refiner) over the Llama states with their attention mask; conditioning
   ``time_text_embed(timestep, CLIP pooled, guidance)``; HunyuanVideo is guidance-distilled, so the guidance is a
   fixed embedded scale (:attr:`HunyuanBackbone.guidance`, the pipeline's ``guidance_scale``, times 1000 as there);
3. RoPE from explicit (t, h, w) positions with the model's ``rope_axes_dim`` and ``rope_theta`` (256); integer
   positions from 0 reproduce the stock ``rope(hidden_states)`` table exactly, fractional positions are allowed;
4. sequence = ``[context ; target]`` (+ the text stream the blocks append themselves), RoPE concatenated alike;
   the joint-attention mask is the stock one with ``K + N`` latent tokens;
5. ``transformer_blocks`` then ``single_transformer_blocks``; the last ``N`` tokens (the targets) are kept before
   ``norm_out`` / ``proj_out`` and unpatchified as the stock forward does.

Timestep modulation: HunyuanVideo's ``temb`` is one vector per *sample* (its AdaLN layers take ``(B, D)``), not per
token as Wan's ``condition_embedder`` allows, so the clean context tokens cannot get their own ``t = 0``
modulation without forking the blocks. They are modulated with the targets' ``temb``; diffusers' FramePack
transformer does the same with its clean-history latents (they are concatenated into ``hidden_states`` and share
the single per-sample ``temb``). The context's cleanliness is carried by its content and positions, not by ``t``.

History KV cache (``history.kv_cache``) is not supported for this family yet: in HunyuanVideo's joint attention the
text stream attends to the latents and feeds every later block, so the history's keys/values are not independent of
the noisy targets without a dedicated processor for the dual- and single-stream attentions. The block-causal,
prompt-free context (``history.context_attention = "block_causal"``) and the stacked tier layout
(``history.tier_layout = "stacked"``, which builds on it) are refused for the same reason, by name.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import HunyuanVideoTransformer3DModel
from diffusers.models.embeddings import get_1d_rotary_pos_embed
from torch import nn

from tinyhistory.backbones.base import ContextTokens, DiffusersBackbone, WithoutHistoryAttention
from tinyhistory.flow import TIMESTEP_SCALE
from tinyhistory.sizing.facts import ReleasedDiT
from tinyhistory.text.condition import TextCondition


def _rope_axes(head_dim: int) -> tuple[int, int, int]:
    """HunyuanVideo's (t, h, w) RoPE split (16, 56, 56 of 128) scaled to ``head_dim``, every axis even."""
    t = max(2, head_dim // 8 // 2 * 2)
    h = (head_dim - t) // 2 // 2 * 2
    return t, h, head_dim - t - h


class HunyuanBackbone(WithoutHistoryAttention, DiffusersBackbone):
    """``velocity = backbone(noisy_latents, t, text, context, frame_positions)``."""

    model_class = HunyuanVideoTransformer3DModel
    family = "hunyuan"
    title = "HunyuanVideo"
    # Why the history KV cache, value RoPE and the block-causal context are refused (see the module docstring).
    attention_gap = (
        "its joint attention lets the text stream read the history and the noisy targets, and every later block reads "
        "that stream back, so the history's keys/values depend on the targets and the prompt without a processor for "
        "the dual- and single-stream attentions"
    )
    pipeline_sampler = "euler"  # HunyuanVideoPipeline's FlowMatchEulerDiscreteScheduler
    # Pipelines whose folders hold a HunyuanVideo DiT (model_index.json ``_class_name``).
    pipelines = ("HunyuanVideoPipeline", "HunyuanVideoImageToVideoPipeline", "HunyuanVideoFramepackPipeline")
    layout = (
        "the Hub's diffusers layout of a HunyuanVideo model (e.g. hunyuanvideo-community/HunyuanVideo): "
        "model_index.json, transformer/, vae/, text_encoder/ (Llama), text_encoder_2/ (CLIP), tokenizer/, "
        "tokenizer_2/, scheduler/"
    )
    # LoRA on the attention projections and FFN / MLP layers of every dual-stream block (image and text streams) and
    # every single-stream block; never the token refiner (``context_embedder``), ``x_embedder``, the modulations,
    # ``norm_out`` / ``proj_out`` or anything outside the blocks (the history encoder). peft full-matches the
    # pattern against module names, so ``transformer_blocks`` never matches inside ``single_transformer_blocks``.
    lora_targets = (
        r"(transformer_blocks\.\d+\.(attn\.(to_q|to_k|to_v|to_out\.0|add_q_proj|add_k_proj|add_v_proj|to_add_out)"
        r"|ff\.net\.0\.proj|ff\.net\.2|ff_context\.net\.0\.proj|ff_context\.net\.2)"
        r"|single_transformer_blocks\.\d+\.(attn\.(to_q|to_k|to_v)|proj_mlp|proj_out))"
    )
    # The diffusers keys are what HunyuanVideo users load elsewhere: ``HunyuanVideoPipeline.load_lora_weights``
    # reads them directly, and ComfyUI's LoRA loader maps diffusers-keyed HunyuanVideo LoRAs itself. There is no
    # second layout worth writing, so the portable file is the same state (see :meth:`portable_lora`).
    portable_lora_file = "lora_hunyuan_diffusers.safetensors"
    # Guidance-distilled: the pipeline's ``true_cfg_scale`` is 1 (one branch); the embedded ``guidance`` steers.
    default_guidance = 1.0
    guidance_distilled = True
    block_lists = ("transformer_blocks", "single_transformer_blocks")

    def __init__(self, transformer: HunyuanVideoTransformer3DModel, guidance: float = 6.0):
        super().__init__()
        self.transformer = transformer
        cfg = transformer.config
        self.patch_size: tuple[int, int, int] = (cfg.patch_size_t, cfg.patch_size, cfg.patch_size)
        self.hidden_dim: int = cfg.num_attention_heads * cfg.attention_head_dim
        self.in_channels: int = cfg.in_channels
        self._rope_dims = tuple(transformer.rope.rope_dim)
        self._rope_theta = float(transformer.rope.theta)
        # The embedded guidance of the guidance-distilled DiT (the pipeline's ``guidance_scale``, default 6.0).
        self.guidance = guidance

    def use_guidance(self, scale: float) -> None:
        """The embedded guidance scale of the next forwards (``generate --distilled-guidance``)."""
        self.guidance = scale

    # -- construction ---------------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, b) -> HunyuanBackbone:
        """A randomly initialised DiT from the ``[backbone]`` table: ``num_layers`` dual- and as many single-stream
        blocks, ``text_dim`` for both the token states and the pooled vector, the RoPE split scaled from 128."""
        hidden = b.num_attention_heads * b.attention_head_dim
        return cls(
            HunyuanVideoTransformer3DModel(
                in_channels=b.in_channels,
                out_channels=b.in_channels,
                num_attention_heads=b.num_attention_heads,
                attention_head_dim=b.attention_head_dim,
                num_layers=b.num_layers,
                num_single_layers=b.num_layers,
                num_refiner_layers=1,
                mlp_ratio=b.ffn_dim / hidden,
                patch_size=b.patch_size[1],
                patch_size_t=b.patch_size[0],
                text_embed_dim=b.text_dim,
                pooled_projection_dim=b.text_dim,
                rope_axes_dim=_rope_axes(b.attention_head_dim),
            )
        )

    def portable_lora(self, state: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
        """The diffusers-keyed LoRA ``state`` unchanged: ``HunyuanVideoPipeline.load_lora_weights`` reads these
        ``transformer.<module>.lora_A/B.weight`` keys, and ComfyUI converts diffusers-keyed HunyuanVideo LoRAs on
        load, so (unlike Wan) no original-layout conversion is needed; alpha = rank is the peft default."""
        del alpha
        return dict(state)

    # -- pieces ---------------------------------------------------------------------------------------------
    def blank_text(self, batch: int, tokens: int, device: str | torch.device = "cpu") -> TextCondition:
        """An uninitialised condition of the shapes this DiT reads (Llama states, a full mask, CLIP's pooled
        vector), for FLOP and memory counts."""
        cfg = self.transformer.config
        return TextCondition(
            torch.empty(batch, tokens, cfg.text_embed_dim, device=device),
            torch.ones(batch, tokens, dtype=torch.long, device=device),
            torch.empty(batch, cfg.pooled_projection_dim, device=device),
        )

    @property
    def patch_embedding(self) -> nn.Conv3d:
        """The DiT's first layer (the Large Patchifier baseline is initialised from it)."""
        return self.transformer.x_embedder.proj

    @property
    def blocks(self) -> nn.ModuleList:
        """Every DiT block in run order: the dual-stream ``transformer_blocks`` then the ``single_transformer_blocks``
        (``after_block(i, …)`` indexes this list)."""
        tr = self.transformer
        return nn.ModuleList([*tr.transformer_blocks, *tr.single_transformer_blocks])

    def rotary(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE (cos, sin), each ``(B, S, head_dim)``, for explicit ``(B, S, 3)`` positions.

        The arithmetic of ``HunyuanVideoRotaryPosEmbed`` (float32 positions, theta 256, interleaved real pairs),
        so integer positions give the stock table bit for bit.
        """
        b, s, _ = positions.shape
        flat = positions.reshape(b * s, 3).to(torch.float32)
        parts = [
            get_1d_rotary_pos_embed(dim, flat[:, axis].contiguous(), self._rope_theta, use_real=True)
            for axis, dim in enumerate(self._rope_dims)
        ]
        cos = torch.cat([p[0] for p in parts], dim=1).reshape(b, s, -1)
        sin = torch.cat([p[1] for p in parts], dim=1).reshape(b, s, -1)
        return cos, sin

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

        latents: ``(B, C, T, H, W)`` noisy targets; t: ``(B,)`` flow time in [0, 1] (a ``(B, T)`` time must be
        equal over the frames: HunyuanVideo modulates per sample); text: Llama ``states`` ``(B, L, text_dim)``,
        their ``mask`` ``(B, L)`` (prompt tokens first; all ones if absent) and CLIP's ``pooled`` ``(B, P)``
        (required); context: optional history tokens; frame_positions: ``(B, T)`` temporal position of each target
        frame (default ``0 … T−1``); after_block: ``f(i, tokens) → tokens`` applied after block ``i`` of
        :attr:`blocks` to the ``(B, K + N, D)`` latent sequence; target_offsets: ``(B, N, D)`` added to the target
        tokens after the patch embedding (the block phase). Returns ``(B, C, T, H, W)``.
        """
        self.refuse_context_cache(context_cache)
        if text.pooled is None:
            raise ValueError("HunyuanVideo needs the CLIP pooled vector (text.pooled); use the 'hunyuan' text encoder")
        tr = self.transformer
        b = latents.shape[0]
        pt, ph, pw = self.patch_size
        (grid_t, grid_h, grid_w), target_pos = self.target_positions(latents, frame_positions)  # (B, N, 3)

        if t.ndim == 2:
            if not torch.equal(t, t[:, :1].expand_as(t)):
                raise ValueError("HunyuanVideo modulates per sample: one flow time per sample, not one per frame")
            t = t[:, 0]
        dtype = latents.dtype
        timestep = (t * TIMESTEP_SCALE).to(dtype).expand(b)
        guidance = None
        if tr.config.guidance_embeds:
            guidance = torch.full((b,), self.guidance * 1000.0, dtype=dtype, device=latents.device)
        states = text.states.to(dtype)
        mask = text.mask if text.mask is not None else torch.ones(states.shape[:2], device=states.device)
        mask = mask.to(states.device)

        # Conditioning, per sample (the context tokens share it; see the module docstring).
        temb, _ = tr.time_text_embed(timestep, text.pooled.to(dtype), guidance)
        tokens = tr.x_embedder(latents)  # (B, N, D)
        if target_offsets is not None:  # block phase (history/phase.py): where each target sits in a history block
            tokens = tokens + target_offsets.to(tokens.dtype)
        text_tokens = tr.context_embedder(states, timestep, mask)
        n = tokens.shape[1]

        positions = target_pos
        if context is not None and context.num_tokens > 0:
            tokens = torch.cat([context.tokens.to(tokens.dtype), tokens], dim=1)
            positions = torch.cat([context.positions.to(target_pos.dtype), target_pos], dim=1)
        cos, sin = self.rotary(positions)

        # The stock joint-attention mask over [latents (K + N); text (L)]: text past each prompt's length is masked.
        latent_len, text_len = tokens.shape[1], text_tokens.shape[1]
        effective = latent_len + mask.sum(dim=1, dtype=torch.int)
        indices = torch.arange(latent_len + text_len, device=tokens.device).unsqueeze(0)
        attention_mask = (indices < effective.unsqueeze(1))[:, None, None, :]  # (B, 1, 1, S)

        # The stock processors take one RoPE table for the whole batch; samples at different positions (frame
        # queries at random Ω) run block by block in per-sample slices, so ``after_block`` still sees the batch.
        shared = b == 1 or bool((positions == positions[:1]).all())  # (one sample: nothing to compare, even on meta)
        checkpointing = torch.is_grad_enabled() and tr.gradient_checkpointing

        def call(block, hs, enc, te, am, rope):
            if checkpointing:
                return tr._gradient_checkpointing_func(block, hs, enc, te, am, rope)
            return block(hs, enc, te, am, rope)

        def run(block, hs, enc):
            if shared:
                return call(block, hs, enc, temb, attention_mask, (cos[0], sin[0]))
            outs = [
                call(block, hs[i : i + 1], enc[i : i + 1], temb[i : i + 1], attention_mask[i : i + 1], (cos[i], sin[i]))
                for i in range(b)
            ]
            return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])

        for i, block in enumerate([*tr.transformer_blocks, *tr.single_transformer_blocks]):
            tokens, text_tokens = run(block, tokens, text_tokens)
            if after_block is not None:
                tokens = after_block(i, tokens)

        # Keep the targets (the last N tokens) before the output head, as FramePack does.
        tokens = tokens[:, -n:]
        tokens = tr.norm_out(tokens, temb)
        tokens = tr.proj_out(tokens)  # (B, N, C·pt·ph·pw), channel first as the stock head lays it out

        out = tokens.reshape(b, grid_t, grid_h, grid_w, -1, pt, ph, pw)
        out = out.permute(0, 4, 1, 5, 2, 6, 3, 7)
        return out.flatten(6, 7).flatten(4, 5).flatten(2, 3)

    # -- sizing facts (sizing/ reads these) ----------------------------------------------------------------------
    # Every dual- and single-stream block counts (a memory trace runs a shallower copy of each list).
    depth_keys = ("num_layers", "num_single_layers")
    # hunyuanvideo-community/HunyuanVideo transformer/config.json: diffusers' convert script
    # (scripts/convert_hunyuan_video_to_diffusers.py) writes the HunyuanVideoTransformer3DModel defaults, which are this
    # model: 24 heads × 128 = 3072, 20 dual- + 40 single-stream blocks, 2 refiner layers, patch 1×2×2 over 16 latent
    # channels, Llama text 4096, CLIP pooled 768, RoPE 16/56/56 at θ 256, guidance embedding (12.8B parameters).
    released = {
        "hunyuanvideo": ReleasedDiT(
            "HunyuanVideo",
            {
                "_class_name": "HunyuanVideoTransformer3DModel",
                "attention_head_dim": 128,
                "guidance_embeds": True,
                "in_channels": 16,
                "mlp_ratio": 4.0,
                "num_attention_heads": 24,
                "num_layers": 20,
                "num_refiner_layers": 2,
                "num_single_layers": 40,
                "out_channels": 16,
                "patch_size": 2,
                "patch_size_t": 1,
                "pooled_projection_dim": 768,
                "qk_norm": "rms_norm",
                "rope_axes_dim": [16, 56, 56],
                "rope_theta": 256.0,
                "text_embed_dim": 4096,
            },
            False,
            "hunyuanvideo-community/HunyuanVideo (diffusers' convert script: the class defaults)",
        )
    }
