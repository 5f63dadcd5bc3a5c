"""Adapter around the stock diffusers ``WanTransformer3DModel`` that accepts history context tokens.

The forward is re-assembled from the stock submodules (DESIGN.md, "Integration recipes"), so weights and LoRA keys
stay diffusers-native:

1. target tokens: ``patch_embedding(x).flatten(2).transpose(1, 2)`` (frame, row, column order);
2. RoPE from explicit (t, h, w) positions with the axis split of ``WanRotaryPosEmbed``; integer positions from 0
   reproduce the stock table exactly, fractional positions (history block centres) are allowed;
3. sequence = ``[context ; target]``, RoPE concatenated in the same order;
4. per-token timesteps ``(B, K + N)``, 0 for context tokens, through ``condition_embedder``;
5. ``blocks`` → ``norm_out`` + modulation → ``proj_out``; the first K outputs are dropped before unpatchify.

The adapter also owns everything else that is family-specific: loading the DiT from a user's folder (its
architecture from ``transformer/config.json``), building a from-scratch DiT from the ``[backbone]`` table (tiny
preset), the LoRA target pattern (anchored to ``blocks.N``), and the extra LoRA file layout Wan users load elsewhere
(the original Wan / ComfyUI keys).

Who attends to whom is changed only through diffusers' processor seam: the history KV cache and value RoPE in the
self-attention (:class:`HistoryAttnProcessor`), the block-causal, prompt-free context (``history.context_attention``)
there and in the text cross-attention (:class:`ContextFreeCrossAttnProcessor`). Training and generation share them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from diffusers import WanTransformer3DModel
from diffusers.models.embeddings import get_1d_rotary_pos_embed
from torch import nn

from tinyhistory.backbones.base import ContextTokens, DiffusersBackbone, SamplingRecipe, read_folder_json
from tinyhistory.backbones.wan_lora_format import to_original_layout
from tinyhistory.flow import TIMESTEP_SCALE
from tinyhistory.sizing.facts import ReleasedDiT
from tinyhistory.text.condition import TextCondition


@dataclass
class ContextCache:
    """The history's keys and values in every block's self-attention, for one segment (``history.kv_cache``).

    With the cache the context tokens attend only to context tokens (and text), so their keys and values do not
    depend on the noisy targets: computed once per segment (and text) and reused by every denoising step. With
    ``history.context_attention = "block_causal"`` they depend on nothing that comes later either (not on later
    blocks, not on the text): the cache then grows block by block across segments (:meth:`extended`), one for both
    CFG branches and every prompt.
    """

    keys: list[torch.Tensor]  # per block (B, K, heads, head_dim), after the q/k norms and RoPE
    values: list[torch.Tensor]  # per block (B, K, heads, head_dim)
    features: torch.Tensor | None = None  # the encoder features the cross-attention enhancers read, if any
    blocks: torch.Tensor | None = None  # (B, K) temporal block of each cached token (block-causal caches)
    sources: torch.Tensor | None = None  # (B, K) the producer of each cached token (ContextTokens.sources)

    @property
    def num_tokens(self) -> int:
        return self.keys[0].shape[1] if self.keys else 0

    def prefix(self, n: int) -> ContextCache:
        """The first ``n`` cached tokens in every block (a block-causal cache's oldest blocks, which attend to nothing
        after them: what stays valid when later tokens change, e.g. when tiered history moves a chunk)."""
        return self.narrow(0, n)

    def narrow(self, start: int, length: int | None = None) -> ContextCache:
        """Cached tokens ``start … start + length`` (default: to the end) in every block: a view, nothing copied
        (the stacked tier layout keeps each rate's blocks and shows the targets a span of them)."""
        stop = self.num_tokens if length is None else start + length

        def cut(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x[:, start:stop]

        return ContextCache(
            [k[:, start:stop] for k in self.keys],
            [v[:, start:stop] for v in self.values],
            cut(self.features),
            cut(self.blocks),
            cut(self.sources),
        )

    def take(self, keep: torch.Tensor) -> ContextCache:
        """The cached tokens where ``keep`` ``(K,)`` bool is True, in every block (a copy): what the targets read of
        a stacked tier layout's cache built at once (``ContextTokens.visible``)."""

        def cut(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x[:, keep.to(x.device)]

        return ContextCache(
            [cut(k) for k in self.keys],
            [cut(v) for v in self.values],
            cut(self.features),
            cut(self.blocks),
            cut(self.sources),
        )

    def extended(self, new: ContextCache) -> ContextCache:
        """This cache followed by ``new``'s tokens in every block (a new object; this one is left as it was, so a
        segment's sliding window can be added for one segment only). Features: both caches' (the window has none)."""
        if not self.num_tokens:
            return new
        blocks = None if self.blocks is None or new.blocks is None else torch.cat([self.blocks, new.blocks], 1)
        sources = None if self.sources is None or new.sources is None else torch.cat([self.sources, new.sources], 1)
        features = [f for f in (self.features, new.features) if f is not None]
        return ContextCache(
            [torch.cat(pair, 1) for pair in zip(self.keys, new.keys, strict=True)],
            [torch.cat(pair, 1) for pair in zip(self.values, new.values, strict=True)],
            torch.cat(features, 1) if features else None,
            blocks,
            sources,
        )


@dataclass
class _AttentionPlan:
    """What the self-attention processors do in the current forward (set by the adapter before its blocks)."""

    mode: str = "masked"  # "masked": [context; targets]; "record" / "cached": see HistoryAttnProcessor
    context_tokens: int = 0
    cache: ContextCache | None = None
    # False with the history KV cache: context queries attend to context keys only.
    context_sees_targets: bool = True
    # history.value_rope: the context's values carry their position (see HistoryAttnProcessor).
    value_rope: bool = False
    # history.phase_readout: our processor splits each target's output into its target part and one context part per
    # readout (after one for the context tokens no readout maps, the sliding window's, when there are any), and
    # ``readouts`` (set per forward: (PhaseReadout, cells (B, N), source) triples) map their producer's part by the
    # target's cell. ``slots`` (B, K): each context token's part of ``parts``; readout i's part is
    # ``parts − len(readouts) + i``.
    phase_readout: bool = False
    readouts: list | None = None
    slots: torch.Tensor | None = None
    parts: int = 1
    # history.context_attention = "block_causal": context queries see context keys of their own and earlier blocks
    # (``mask``), and the context skips the text cross-attention (ContextFreeCrossAttnProcessor).
    block_causal: bool = False
    # Which context keys each context query sees, (B, 1, Q, S) bool, or None for all: masked mode (Q = S = K) and
    # record mode (Q = the new tokens, S = the prior cache's tokens + the new ones).
    mask: torch.Tensor | None = None
    # record mode: the new tokens' keys/values go here; ``cache`` is then the prior cache they attend to (or None).
    recorded: ContextCache | None = None
    # history.tier_layout = "stacked": a context query sees keys of its own and the ``window − 1`` earlier blocks
    # only (0: all earlier blocks), so the cache's append attends to a bounded set.
    window: int = 0
    # Which keys the target queries see, (B, 1, 1, K + N) bool, or None for all (masked mode; ContextTokens.visible:
    # the stacked layout hides the rates a block is not in now).
    target_mask: torch.Tensor | None = None


def block_causal_mask(query_blocks: torch.Tensor, key_blocks: torch.Tensor, window: int = 0) -> torch.Tensor:
    """``(B, 1, Q, S)`` bool: query token i sees key token j when j's temporal block is not after i's (and, with a
    ``window`` of blocks, not ``window`` or more blocks before it)."""
    behind = query_blocks[:, :, None] - key_blocks[:, None, :]  # (B, Q, S) blocks from key to query
    seen = behind >= 0
    if window:
        seen = seen & (behind < window)
    return seen[:, None]


def _expand_batch(x: torch.Tensor, batch: int) -> torch.Tensor:
    """A block-causal cache is built once for both CFG branches: ``(b, …)`` → ``(batch, …)``, the b histories
    tiled (a guided batch is ``[conditional ; unconditional]``, each half the same b samples)."""
    if x.shape[0] == batch:
        return x
    if x.shape[0] == 1:
        return x.expand(batch, *x.shape[1:])
    return x.repeat(batch // x.shape[0], *([1] * (x.ndim - 1)))


class HistoryAttnProcessor:
    """Self-attention of one Wan block for the history KV cache and for value RoPE, in diffusers' processor seam.

    The projections, q/k RMS norms, RoPE and output projection are the block's own (LoRA included), as in diffusers'
    ``WanAttnProcessor``; only who attends to whom, and (value RoPE) how the context's values enter, changes:

    * ``masked`` (training, and inference without a cache): the sequence is ``[context (K); targets (N)]``; target
      queries attend to everything (but the context tokens ``plan.target_mask`` hides), context queries to context
      keys only (KV cache) or to everything;
    * ``record``: the sequence is the context alone (with a block-causal prior cache: the newest blocks, which also
      attend to the prior cache's keys); its keys and values are stored in ``plan.recorded``;
    * ``cached``: the sequence is the targets alone; they attend to the cached context keys/values and themselves.

    **Block-causal context** (``history.context_attention = "block_causal"``, issue 24): context queries see only
    context keys of their own and earlier temporal blocks (``plan.mask``), so a block's keys and values never change
    once computed and the cache grows by the newest blocks only. With a window (``plan.window``, the stacked tier
    layout) they see only the last ``window`` blocks, so an append attends to a bounded set of keys.

    **Value RoPE** (``history.value_rope``, issue 22): RoPE rotates queries and keys, never values, so every target
    token in a history block receives the same value from that block's token and nothing says which cell of the block
    it is. With value RoPE a context value is rotated by its own position before attention, and the context part of
    each output is rotated back by the query's position: ``out_i = Σ_{j∈ctx} a_ij R(p_j − p_i) v_j + Σ_{j∈tgt} a_ij
    v_j``. What a target reads from a history token then depends on its offset from the block centre, linearly, so
    the value projection can lay out a block's cells for the targets to read. Target values are untouched (the base
    model's own attention among targets is exactly the stock one). The two parts share one softmax: the values are
    laid side by side, ``[R(p_j) v_j, 0]`` for context keys and ``[0, v_j]`` for target keys (value width 2·head_dim),
    and the two halves of the output are recombined after rotating the first back.

    **Phase readout** (``history.phase_readout``, issue 22): the same trick with one context part per producer that
    has a readout, so each readout maps only what the targets read from its own producer's tokens (by the target's
    cell of that producer's rate) and the context tokens no readout is for — a sliding window's uncompressed frames,
    read one to one — stay in a part of their own that no map touches (``plan.slots``; value width
    ``(readouts + 2)·head_dim``, one less without such tokens).
    """

    def __init__(self, plan: _AttentionPlan, index: int):
        self.plan = plan
        self.index = index

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        from diffusers.models.attention_dispatch import dispatch_attention_fn
        from diffusers.models.transformers.transformer_wan import _get_qkv_projections

        query, key, value = _get_qkv_projections(attn, hidden_states, None)
        query, key = attn.norm_q(query), attn.norm_k(key)
        query, key, value = (x.unflatten(2, (attn.heads, -1)) for x in (query, key, value))  # (B, S, H, Dh)
        if rotary_emb is not None:
            query, key = _rotate(query, *rotary_emb), _rotate(key, *rotary_emb)

        def attend(q, k, v, mask=None):
            return dispatch_attention_fn(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False)

        plan = self.plan
        rope_values = plan.value_rope and rotary_emb is not None
        if plan.mode == "record":  # the context alone (the newest blocks after a prior cache)
            if rope_values:
                value = _rotate(value, *rotary_emb)
            plan.recorded.keys.append(key)
            plan.recorded.values.append(value)
            keys, values = key, value
            if plan.cache is not None and plan.cache.num_tokens:
                keys = torch.cat([plan.cache.keys[self.index].to(key.dtype), key], dim=1)
                values = torch.cat([plan.cache.values[self.index].to(value.dtype), value], dim=1)
            out = attend(query, keys, values, plan.mask)
            if rope_values:
                out = _rotate(out, rotary_emb[0], -rotary_emb[1])
        elif plan.mode == "cached":  # the targets alone, after the cached context
            b = query.shape[0]
            keys = torch.cat([_expand_batch(plan.cache.keys[self.index], b).to(key.dtype), key], dim=1)
            context_values = _expand_batch(plan.cache.values[self.index], b).to(value.dtype)
            if rope_values or plan.readouts:
                slots = _expand_batch(plan.slots, b) if plan.slots is not None else None
                values = _slotted(context_values, value, slots, plan.parts)
                out = self._combine(attend(query, keys, values), rotary_emb, rope_values, 0)
            else:
                out = attend(query, keys, torch.cat([context_values, value], dim=1))
        else:
            k = plan.context_tokens
            sees_all = plan.context_sees_targets and not plan.block_causal
            if (rope_values or plan.readouts) and k:
                context_values = value[:, :k]
                if rope_values:
                    cos, sin = rotary_emb
                    context_values = _rotate(context_values, cos[:, :k], sin[:, :k])
                values = _slotted(context_values, value[:, k:], plan.slots, plan.parts)
                if sees_all:
                    out = attend(query, key, values)
                else:
                    context = attend(query[:, :k], key[:, :k], values[:, :k], plan.mask)
                    out = torch.cat([context, attend(query[:, k:], key, values, plan.target_mask)], dim=1)
                out = self._combine(out, rotary_emb, rope_values, k)
            elif k == 0 or sees_all:
                out = attend(query, key, value)
            else:
                context = attend(query[:, :k], key[:, :k], value[:, :k], plan.mask)
                targets = attend(query[:, k:], key, value, plan.target_mask)
                out = torch.cat([context, targets], dim=1)
        out = out.flatten(2, 3).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))

    def _combine(self, out: torch.Tensor, rotary_emb, rope_values: bool, first_target: int) -> torch.Tensor:
        """Slotted output ``(B, S, H, (P + 1)·Dh)`` → ``(B, S, H, Dh)``: the P context parts (rotated back with value
        RoPE; for the target rows, from ``first_target`` on, each readout's part plus its map) plus the target part."""
        parts = out.unflatten(-1, (self.plan.parts + 1, -1))  # (B, S, H, P + 1, Dh)
        context, targets = parts[..., :-1, :], parts[..., -1, :]
        if rope_values:  # the queries are the last S positions (the whole sequence, or the targets after a cache)
            cos, sin = (x[:, -out.shape[1] :, :, None] for x in rotary_emb)  # (B, S, 1, 1, Dh)
            context = _rotate(context, cos, -sin)
        return self._read(context, first_target) + targets

    def _read(self, context: torch.Tensor, first_target: int) -> torch.Tensor:
        """The context parts ``(B, S, H, P, Dh)`` summed, with each readout's per-cell map of its own producer's part
        added to the target rows: ``(B, S, H, Dh)``."""
        whole = context.sum(-2)
        readouts = self.plan.readouts
        if not readouts:
            return whole
        rows = context[:, first_target:]  # (B, N, H, P, Dh)
        first = self.plan.parts - len(readouts)  # readout i's part: first + i
        delta = sum(
            readout.delta(self.index, rows[..., first + i, :].flatten(2), cells)  # (B, N, D)
            for i, (readout, cells, _) in enumerate(readouts)
        )
        mapped = whole[:, first_target:] + delta.unflatten(2, whole.shape[2:])
        return torch.cat([whole[:, :first_target], mapped], dim=1)


class ContextFreeCrossAttnProcessor:
    """The text cross-attention (``attn2``) of one Wan block with ``history.context_attention = "block_causal"``:
    the context rows get zeros, so their residual stream is unchanged (``attn2``'s output is added without a gate),
    and the target rows get the stock result (``stock``, the processor it replaced).

    Why skip rather than read one fixed empty condition: skipping makes the history's keys and values independent of
    every prompt at no cost (an empty condition would still cost the context a cross-attention per block, and would
    tie the cache to that condition's encoding); the targets still read the prompt, and they are what is predicted.
    """

    def __init__(self, plan: _AttentionPlan, stock):
        self.plan = plan
        self.stock = stock

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        plan = self.plan
        if plan.mode == "record":  # the context alone: nothing to read
            return torch.zeros_like(hidden_states)
        k = plan.context_tokens if plan.mode == "masked" else 0
        if k == 0:
            return self.stock(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        targets = self.stock(attn, hidden_states[:, k:], encoder_hidden_states, attention_mask, rotary_emb)
        return torch.cat([targets.new_zeros(targets.shape[0], k, targets.shape[2]), targets], dim=1)  # (B, K + N, D)


def _slotted(
    context_values: torch.Tensor, target_values: torch.Tensor, slots: torch.Tensor | None, parts: int
) -> torch.Tensor:
    """Values laid side by side so that one softmax gives every part of the output apart: context value j in part
    ``slots[j]`` of ``parts`` (all in part 0 without ``slots``), every target value in part ``parts``, zeros
    elsewhere. context ``(B, K, H, Dh)``, targets ``(B, N, H, Dh)`` → ``(B, K + N, H, (parts + 1)·Dh)``."""
    b, k, _, dim = context_values.shape
    if slots is None:
        slots = torch.zeros(b, k, dtype=torch.int64, device=context_values.device)
    where = nn.functional.one_hot(slots.to(context_values.device), parts + 1).to(context_values.dtype)  # (B, K, P+1)
    context = (context_values[:, :, :, None, :] * where[:, :, None, :, None]).flatten(3)  # (B, K, H, (P + 1)·Dh)
    targets = torch.cat([target_values.new_zeros(*target_values.shape[:3], parts * dim), target_values], dim=-1)
    return torch.cat([context, targets], dim=1)


def _readout_slots(readouts: list, context: ContextTokens | ContextCache | None) -> tuple[torch.Tensor | None, int]:
    """Each context token's part of the targets' output (:func:`_slotted`), ``(B, K)`` int64, and how many parts:
    part 0 for the tokens no readout is for (the sliding window's frames, producers without a readout) if there are
    any, then one per readout, for its producer's tokens."""
    if context is None:
        return None, 1
    if context.sources is None:
        raise ValueError(
            "history.phase_readout maps each producer's tokens by that producer's cells, so it needs to know which "
            "producer made each context token (ContextTokens.sources, set by the producers and "
            "HistoryDiT.window_tokens); this context has none"
        )
    slots = torch.zeros_like(context.sources)
    for i, (_, _, source) in enumerate(readouts):
        slots[context.sources == source] = i + 1
    if bool((slots > 0).all()):  # every token is a readout's: no unmapped part to carry (values stay narrower)
        return slots - 1, len(readouts)
    return slots, len(readouts) + 1


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE on interleaved pairs, the arithmetic of diffusers' ``WanAttnProcessor``."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = cos[..., 0::2], sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(x)


class WanBackbone(DiffusersBackbone):
    """``velocity = backbone(noisy_latents, t, text, context, frame_positions)``."""

    model_class = WanTransformer3DModel
    family = "wan"
    title = "Wan"
    pipeline_sampler = "unipc"  # WanPipeline's UniPCMultistepScheduler (flow sigmas)
    # Pipelines whose folders hold a Wan DiT (model_index.json ``_class_name``).
    pipelines = ("WanPipeline", "WanImageToVideoPipeline", "WanVideoToVideoPipeline", "WanVACEPipeline")
    layout = (
        "the Hub's diffusers layout of a Wan model (e.g. Wan-AI/Wan2.1-T2V-1.3B-Diffusers): model_index.json, "
        "transformer/, vae/, text_encoder/, tokenizer/, scheduler/"
    )
    # LoRA on every attention projection (self and cross) and both FFN layers of every block, never on the patch
    # embedding, the condition embedder, the output head or anything outside ``blocks.N`` (the history encoder).
    lora_targets = (
        r"blocks\.\d+\.(attn1\.(to_q|to_k|to_v|to_out\.0)|attn2\.(to_q|to_k|to_v|to_out\.0)|ffn\.net\.0\.proj|ffn\.net\.2)"
    )  # fmt: skip
    # The extra LoRA file users take to ComfyUI and diffusers (original Wan keys, ``diffusion_model.`` prefix).
    portable_lora_file = "lora_wan_comfyui.safetensors"

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
        self.kv_cache = False
        self.block_causal = False
        self.context_window = 0  # blocks a context token sees (its own included); 0: every earlier block
        self._plan = _AttentionPlan()

    @classmethod
    def sampling_recipe(cls, folder: Path | None, transformer: str = "transformer") -> SamplingRecipe:
        """The folder's UniPC scheduler, and what its ``model_index.json`` says of the pipeline:

        * Wan 2.2 A14B (``boundary_ratio``, a ``transformer_2/``): the stock low-noise expert denoises the steps below
          the boundary, as ``WanPipeline`` switches experts; only when ``transformer`` is the high-noise expert. The
          history encoder and the LoRA are trained on the high-noise expert only (the paper's choice, t ≥ 0.875): it
          lays out the scene and motion, which the history steers; the low-noise expert refines detail from the text
          and the partly denoised latent alone, with no history tokens.
        * Wan 2.2 TI2V-5B (``expand_timesteps``): an image start is the clean first latent frame of the first segment,
          as ``WanImageToVideoPipeline`` conditions on it.
        """
        meta = read_folder_json(folder, "model_index.json") or {}
        recipe = replace(super().sampling_recipe(folder, transformer), first_frame=bool(meta.get("expand_timesteps")))
        experts = meta.get("boundary_ratio") is not None and (Path(folder) / "transformer_2").is_dir()
        if transformer == "transformer" and experts:
            recipe = replace(recipe, second_expert="transformer_2", boundary=float(meta["boundary_ratio"]))
        return recipe

    def use_kv_cache(self) -> None:
        """History KV cache (``history.kv_cache``): context tokens attend to context (and text) only, in training
        and in generation, so that generation can compute their keys and values once per segment."""
        self.kv_cache = True
        self._plan.context_sees_targets = False
        self._set_processors()

    def use_full_attention(self) -> None:
        """Every token attends to every token (a run without ``history.kv_cache`` started from a checkpoint trained
        with it): the stock processors, unless value RoPE still needs ours."""
        self.kv_cache = False
        self.block_causal = self._plan.block_causal = False
        self._plan.context_sees_targets = True
        self._set_processors()

    def use_block_causal(self, enabled: bool = True) -> None:
        """``history.context_attention = "block_causal"`` (with the KV cache): each temporal history block's tokens
        attend to their own and earlier blocks only and skip the text cross-attention (clean timestep 0 as always),
        so their keys and values depend on nothing later and :meth:`build_context_cache` can grow the cache."""
        self.block_causal = self._plan.block_causal = enabled
        self._set_processors()

    def use_context_window(self, blocks: int) -> None:
        """``history.tier_layout = "stacked"`` (with the block-causal context): a context token attends to its own
        and the ``blocks − 1`` earlier temporal blocks only (0: every earlier block), so that appending a block to
        the cache attends to a bounded set of keys however long the history, and no block depends on which tier an
        older block is in. The targets' side (which rate of a block they see) is ``ContextTokens.visible``."""
        if blocks < 0:
            raise ValueError(f"a context window is a number of blocks >= 0, got {blocks}")
        self.context_window = self._plan.window = blocks

    def use_value_rope(self, enabled: bool = True) -> None:
        """``history.value_rope``: the context's values carry their position (:class:`HistoryAttnProcessor`)."""
        self._plan.value_rope = enabled
        self._set_processors()

    def use_phase_readout(self, enabled: bool = True) -> None:
        """``history.phase_readout``: our processor keeps each target's context read apart, so the readouts given
        to :meth:`forward` (``target_readouts``) can map it per cell (``history.phase.PhaseReadout``)."""
        self._plan.phase_readout = enabled
        self._set_processors()

    def _set_processors(self) -> None:
        """Our processor where the KV cache, value RoPE or the phase readout needs it, else diffusers' own (bit for
        bit the stock)."""
        from diffusers.models.transformers.transformer_wan import WanAttnProcessor

        ours = self.kv_cache or self._plan.value_rope or self._plan.phase_readout or self.block_causal
        for i, block in enumerate(self.transformer.blocks):
            block.attn1.set_processor(HistoryAttnProcessor(self._plan, i) if ours else WanAttnProcessor())
            cross = block.attn2.processor
            stock = cross.stock if isinstance(cross, ContextFreeCrossAttnProcessor) else cross
            block.attn2.set_processor(ContextFreeCrossAttnProcessor(self._plan, stock) if self.block_causal else stock)

    @torch.no_grad()
    def build_context_cache(
        self,
        context: ContextTokens,
        text: TextCondition | None,
        after_block=None,
        prior: ContextCache | None = None,
    ) -> ContextCache:
        """Run the context tokens alone through the blocks (time 0) and keep every block's keys and values.

        Block-causal (:meth:`use_block_causal`): ``context`` are the newest blocks, which attend to ``prior`` (the
        cache of every earlier block, or None) and to themselves; returns ``prior`` extended by them. ``text`` and
        ``after_block`` are not read then (the context reads no prompt and no enhancer)."""
        if not self.kv_cache:
            raise ValueError("build_context_cache needs history.kv_cache (the context must not attend to targets)")
        if self.block_causal:
            return self._extend_cache(context, prior)
        if prior is not None:
            raise ValueError("only a block-causal cache (history.context_attention) grows from a prior cache")
        tr = self.transformer
        tokens = context.tokens.to(tr.patch_embedding.weight.dtype)
        b, k, _ = tokens.shape
        timestep = tokens.new_zeros(b, k)
        _, timestep_proj, text_states, _ = tr.condition_embedder(
            timestep.flatten(), text.states.to(tokens.dtype), timestep_seq_len=k
        )
        timestep_proj = timestep_proj.unflatten(2, (6, -1))
        rotary_emb = self.rotary(context.positions)
        cache = ContextCache([], [], context.features, sources=context.sources)
        self._plan.mode, self._plan.recorded = "record", cache
        try:
            for i, block in enumerate(tr.blocks):
                tokens = block(tokens, text_states, timestep_proj, rotary_emb)
                if after_block is not None:
                    tokens = after_block(i, tokens)
        finally:
            self._plan.mode, self._plan.recorded = "masked", None
        return cache

    def _extend_cache(self, context: ContextTokens, prior: ContextCache | None) -> ContextCache:
        """The block-causal cache: ``context``'s tokens (the newest blocks, batch 1 for both CFG branches) through
        the blocks at time 0 without text, attending to ``prior``'s keys and to their own and earlier blocks."""
        tr = self.transformer
        blocks = self._context_blocks(context)  # (B, K)
        tokens = context.tokens.to(tr.patch_embedding.weight.dtype)
        b, k, _ = tokens.shape
        # The context skips attn2, so any text states do; one zero token keeps the embedder's shapes.
        no_text = tokens.new_zeros(b, 1, tr.config.text_dim)
        _, timestep_proj, text_states, _ = tr.condition_embedder(tokens.new_zeros(b * k), no_text, timestep_seq_len=k)
        timestep_proj = timestep_proj.unflatten(2, (6, -1))
        rotary_emb = self.rotary(context.positions)
        prior = prior if prior is not None and prior.num_tokens else None
        keys_blocks = blocks if prior is None else torch.cat([_expand_batch(prior.blocks, b), blocks], 1)
        recorded = ContextCache([], [], context.features, blocks, context.sources)
        plan = self._plan
        plan.mode, plan.cache, plan.recorded = "record", prior, recorded
        plan.mask = block_causal_mask(blocks, keys_blocks.to(blocks.device), plan.window)  # (B, 1, K, K_prior + K)
        try:
            for block in tr.blocks:
                tokens = block(tokens, text_states, timestep_proj, rotary_emb)
        finally:
            plan.mode, plan.cache, plan.recorded, plan.mask = "masked", None, None, None
        return prior.extended(recorded) if prior is not None else recorded

    @staticmethod
    def _context_blocks(context: ContextTokens) -> torch.Tensor:
        """The context's temporal blocks ``(B, K)``, which block-causal attention needs and only HistoryDiT knows."""
        if context.blocks is None:
            raise ValueError(
                'history.context_attention = "block_causal" needs each context token\'s temporal block '
                "(ContextTokens.blocks, set by HistoryDiT.history_context / encode_history)"
            )
        return context.blocks

    def _target_mask(self, context: ContextTokens, n: int) -> torch.Tensor:
        """``(B, 1, 1, K + N)``: the context tokens the targets see (``context.visible``), then every target."""
        if not self.block_causal:
            raise ValueError(
                "context tokens hidden from the targets (ContextTokens.visible, the stacked tier layout) need the "
                'block-causal context (history.context_attention = "block_causal")'
            )
        visible = context.visible.to(torch.bool)
        targets = visible.new_ones(visible.shape[0], n)
        return torch.cat([visible, targets], dim=1)[:, None, None, :]

    def _enhance(self, after_block, i: int, tokens: torch.Tensor, k: int) -> torch.Tensor:
        """The per-block hook on ``(B, K + N, D)``; block-causal context rows skip it (the enhancers read every
        block's features, later blocks included), so only the target rows (row-wise independent) pass."""
        if not (self.block_causal and k):
            return after_block(i, tokens)
        return torch.cat([tokens[:, :k], after_block(i, tokens[:, k:])], dim=1)

    # -- construction ---------------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, b) -> WanBackbone:
        """A randomly initialised DiT from the ``[backbone]`` table (the tiny preset trains it from scratch)."""
        return cls(
            WanTransformer3DModel(
                patch_size=tuple(b.patch_size),
                num_attention_heads=b.num_attention_heads,
                attention_head_dim=b.attention_head_dim,
                in_channels=b.in_channels,
                out_channels=b.in_channels,
                text_dim=b.text_dim,
                ffn_dim=b.ffn_dim,
                num_layers=b.num_layers,
                rope_max_seq_len=1024,
            )
        )

    def portable_lora(self, state: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
        """The diffusers-keyed LoRA ``state`` in the original Wan / ComfyUI layout (both ComfyUI and
        ``WanPipeline.load_lora_weights`` read it)."""
        return to_original_layout(state, alpha)

    # -- pieces ---------------------------------------------------------------------------------------------
    def blank_text(self, batch: int, tokens: int, device: str | torch.device = "cpu") -> TextCondition:
        """An uninitialised condition of the shapes this DiT reads (UMT5 states), for FLOP and memory counts."""
        return TextCondition(torch.empty(batch, tokens, self.transformer.config.text_dim, device=device))

    @property
    def patch_embedding(self) -> nn.Conv3d:
        """The DiT's first layer (the Large Patchifier baseline is initialised from it)."""
        return self.transformer.patch_embedding

    @property
    def blocks(self) -> nn.ModuleList:
        return self.transformer.blocks

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
        text: TextCondition,
        context: ContextTokens | None = None,
        frame_positions: torch.Tensor | None = None,
        after_block: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
        context_cache: ContextCache | None = None,
        target_offsets: torch.Tensor | None = None,
        target_readouts: list | None = None,
    ) -> torch.Tensor:
        """Predict the velocity of the target latents.

        latents: ``(B, C, T, H, W)`` noisy targets; t: ``(B,)`` flow time in [0, 1] (or ``(B, T)``, one per frame);
        text: states ``(B, L, text_dim)``;
        context: optional history tokens; frame_positions: ``(B, T)`` temporal position of each target frame
        (default ``0 … T−1``); after_block: ``f(i, tokens) → tokens`` applied after DiT block ``i`` to the whole
        ``(B, K + N, D)`` sequence (the cross-attention enhancement); context_cache: the history's keys and values
        from :meth:`build_context_cache` instead of ``context`` (only the targets run through the blocks);
        target_readouts: ``(PhaseReadout, cells (B, N), source)`` triples (``history.phase_readout``, after
        :meth:`use_phase_readout`; each maps the part read from the tokens whose ``sources`` is its ``source``).
        Returns ``(B, C, T, H, W)``.
        """
        tr = self.transformer
        b = latents.shape[0]
        pt, ph, pw = self.patch_size
        (grid_t, grid_h, grid_w), target_pos = self.target_positions(latents, frame_positions)  # (B, N, 3)

        tokens = tr.patch_embedding(latents).flatten(2).transpose(1, 2).contiguous()  # (B, N, D)
        if target_offsets is not None:  # block phase (history/phase.py): where each target sits in a history block
            tokens = tokens + target_offsets.to(tokens.dtype)
        n = tokens.shape[1]
        timestep = (t * TIMESTEP_SCALE).to(latents.dtype)
        if timestep.ndim == 2:  # one time per target frame (TI2V's clean first frame): per token (B, N)
            timestep = timestep[:, :, None].expand(b, grid_t, grid_h * grid_w).reshape(b, n)
        if context is not None and context.num_tokens > 0:
            k = context.num_tokens
            tokens = torch.cat([context.tokens.to(tokens.dtype), tokens], dim=1)
            positions = torch.cat([context.positions.to(target_pos.dtype), target_pos], dim=1)
            # Per-token timesteps: clean history at 0, targets at t. (B, K + N)
            targets_t = timestep if timestep.ndim == 2 else timestep[:, None].expand(b, n)
            timestep = torch.cat([timestep.new_zeros(b, k), targets_t], dim=1)
        else:
            k = 0
            positions = target_pos
        rotary_emb = self.rotary(positions)
        self._plan.mode, self._plan.context_tokens, self._plan.cache = "masked", k, None
        if target_readouts and not self._plan.phase_readout:
            raise ValueError("target_readouts need use_phase_readout() first (the stock processor ignores them)")
        self._plan.readouts = target_readouts or None  # kept after the forward, like the mask (checkpointing)
        self._plan.slots, self._plan.parts = None, 1
        if target_readouts:
            self._plan.slots, self._plan.parts = _readout_slots(target_readouts, context if k else context_cache)
        # (B, 1, K, K) block-causal; kept after the forward, as the plan's other fields are: gradient checkpointing
        # recomputes the blocks during backward and must see the same pattern
        self._plan.mask = self._plan.target_mask = None
        if self.block_causal and k:
            blocks = self._context_blocks(context).to(latents.device)
            self._plan.mask = block_causal_mask(blocks, blocks, self._plan.window)
        if k and context.visible is not None:
            self._plan.target_mask = self._target_mask(context, n)
        if context_cache is not None:
            if k:
                raise ValueError("give either the context tokens or their cache, not both")
            self._plan.mode, self._plan.cache = "cached", context_cache

        per_token = timestep.ndim == 2
        temb, timestep_proj, text_states, _ = tr.condition_embedder(
            timestep.flatten() if per_token else timestep,
            text.states.to(latents.dtype),
            timestep_seq_len=timestep.shape[1] if per_token else None,
        )
        timestep_proj = timestep_proj.unflatten(2 if per_token else 1, (6, -1))

        checkpointing = torch.is_grad_enabled() and tr.gradient_checkpointing
        try:
            for i, block in enumerate(tr.blocks):
                if checkpointing:
                    tokens = tr._gradient_checkpointing_func(block, tokens, text_states, timestep_proj, rotary_emb)
                else:
                    tokens = block(tokens, text_states, timestep_proj, rotary_emb)
                if after_block is not None:
                    tokens = self._enhance(after_block, i, tokens, k)
        finally:
            self._plan.cache = None

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

    # -- sizing facts (sizing/ reads these) ----------------------------------------------------------------------
    # The released Wan DiTs' transformer/config.json, keyed by the preset's ``base``. Values: diffusers'
    # scripts/convert_wan_to_diffusers.py (get_transformer_config: "Wan-T2V-1.3B", "Wan-T2V-14B", "Wan2.2-TI2V-5B",
    # "Wan2.2-T2V-A14B"), the script that wrote the Wan-AI/*-Diffusers repos, cross-checked against the original Wan
    # configs (wan_t2v_1_3B.py: dim 1536, ffn 8960, 12 heads, 30 layers; wan_ti2v_5B.py: dim 3072, ffn 14336, 24
    # heads, 30 layers; wan_t2v_A14B.py: dim 5120, ffn 13824, 40 heads, 40 layers). The A14B file is the Hub's
    # Wan-AI/Wan2.2-T2V-A14B-Diffusers transformer_2/config.json (refs/pr/2) verbatim, and both A14B experts share one
    # config ("transformer" = the high-noise expert the paper trains). Keys the convert script omits (image_dim,
    # rope_max_seq_len, pos_embed_seq_len) take diffusers' defaults (None, 1024, None); none adds a parameter to a
    # text-to-video model. A third-party TI2V-5B mirror (inference-sh/…, an image-to-video repackaging) lists
    # added_kv_proj_dim 5120 / image_dim 1280; the official conversion has None/None, used here.
    _keys21 = {
        "_class_name": "WanTransformer3DModel",
        "_diffusers_version": "0.33.0.dev0",
        "added_kv_proj_dim": None,
        "attention_head_dim": 128,
        "cross_attn_norm": True,
        "eps": 1e-06,
        "freq_dim": 256,
        "image_dim": None,
        "in_channels": 16,
        "out_channels": 16,
        "patch_size": [1, 2, 2],
        "qk_norm": "rms_norm_across_heads",
        "rope_max_seq_len": 1024,
        "text_dim": 4096,
    }
    _keys22 = {**_keys21, "_diffusers_version": "0.35.0.dev0", "pos_embed_seq_len": None}
    _source = "diffusers scripts/convert_wan_to_diffusers.py (the Wan-AI/*-Diffusers configs)"
    released = {
        "wan2.1-1.3b": ReleasedDiT(
            "Wan2.1-T2V-1.3B", {**_keys21, "ffn_dim": 8960, "num_attention_heads": 12, "num_layers": 30}, False, _source
        ),
        "wan2.1-14b": ReleasedDiT(
            "Wan2.1-T2V-14B", {**_keys21, "ffn_dim": 13824, "num_attention_heads": 40, "num_layers": 40}, False, _source
        ),
        "wan2.2-ti2v-5b": ReleasedDiT(
            "Wan2.2-TI2V-5B",
            {
                **_keys22,
                "ffn_dim": 14336,
                "num_attention_heads": 24,
                "num_layers": 30,
                "in_channels": 48,
                "out_channels": 48,
            },
            False,
            _source,
        ),
        "wan2.2-a14b-high": ReleasedDiT(
            "Wan2.2-T2V-A14B (high-noise)",
            {**_keys22, "ffn_dim": 13824, "num_attention_heads": 40, "num_layers": 40},
            True,  # transformer_2/: the low-noise expert, same config, loaded for generation (no LoRA, no history)
            _source,
        ),
    }
    del _keys21, _keys22, _source

    @staticmethod
    def activation_formula(config: dict, sequence: int, lora_rank: int, text_tokens: int) -> tuple[int, int, int]:
        """``(kept block inputs, shared block inputs, one block recomputed)`` bytes of one training step of
        ``sequence`` = S tokens, batch 1, bf16 autocast, gradient checkpointing on every ``WanTransformerBlock``
        (D = hidden, F = FFN width, r = LoRA rank, L = blocks):

        * kept block inputs ``S·D·2·L`` (checkpointing keeps only each block's bf16 input);
        * shared block inputs, kept once: the per-token timestep projection ``S·6·D·2`` (every token has its own
          timestep: context 0, targets t), RoPE cos/sin ``2·S·head_dim·4``, text states ``text·D·2``;
        * one block recomputed in backward: ``80·D + 4·F + 16·r`` bytes per token, what autograd keeps in a block
          under bf16 autocast with flash attention (no S×S matrix):

          - self-attention 54·D: fp32 LayerNorm input (4D), fp32 ``1 + scale`` (4D), the fp32 per-token modulation
            ``scale_shift_table + temb`` of which gate views stay alive (6 × 4D), bf16 norm output (2D), q and k
            before RMSNorm in bf16 and the fp32 copy RMSNorm squares (2 × 6D), SDPA's q, k, v and output (4 × 2D);
          - cross-attention 16·D: fp32 LayerNorm input (4D), its bf16 output (2D), q before RMSNorm (6D), SDPA's q
            and output (2 × 2D); K/V over the text tokens add ``10·text·D`` bytes per block;
          - FFN 10·D + 4·F: fp32 LayerNorm input and ``1 + c_scale`` (2 × 4D), bf16 norm output (2D), the GELU's
            input and output (2 × 2F);
          - LoRA: the rank-r output of ``lora_A`` in each of the 8 adapted linears that run on the S tokens (8 × 2r).

        Not counted: transient gradient buffers of the block being back-propagated, allocator fragmentation."""
        s, d, f = sequence, config["num_attention_heads"] * config["attention_head_dim"], config["ffn_dim"]
        kept = s * d * 2 * config["num_layers"]
        shared = s * 6 * d * 2 + 2 * s * config["attention_head_dim"] * 4 + text_tokens * d * 2
        one_block = s * (80 * d + 4 * f + 16 * lora_rank) + 10 * text_tokens * d
        return kept, shared, one_block
