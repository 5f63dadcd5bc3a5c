"""Memory at real size without a GPU: exact parameter bytes, a formula for training activations, and traces of
generation's live tensors on the meta device.

Why this exists: before renting a GPU (or buying one) a user wants to know whether a DiT + LoRA + history encoder
trains on a 24 GB card, and whether generation fits 8 GB with ``--offload``; ``tinyhistory plan`` answers from what
this module computes, and ``benchmarks/memory_estimate.py`` prints the same counts and formula as tables. Nothing
here downloads weights or allocates real memory: every model is built on the ``meta`` device from its diffusers
config, so a 14B DiT costs nothing.

Every family fact (configs, LoRA targets, block lists, VAE, text encoder) comes from the family's classes through
:mod:`tinyhistory.sizing.models`; nothing here names a family.

Three kinds of numbers, kept apart on purpose (every caller labels which is which):

* **exact**: parameter counts and the bytes they imply for a storage rule (:func:`count_model`,
  :func:`component_params`): frozen weights as ``from_pretrained(torch_dtype=bfloat16)`` stores them (bf16 except
  diffusers' ``_keep_in_fp32_modules``), trainable weights fp32 + fp32 grads + AdamW's two fp32 moments;
* **formula** or **trace** (an estimate): activation memory of one training step, with and without gradient
  checkpointing (:func:`stage_activations`): the family's own formula where it declares one (Wan:
  ``WanBackbone.activation_formula``, every term listed there), else a trace of the family's forward with autograd
  on the meta device (:func:`traced_activations`);
* **trace** (an estimate): the live-tensor peak of the project's own generation code — one guided DiT step, the
  history KV cache, the VAE's streaming decode — run on meta tensors under :class:`LiveBytes`, a dispatch mode that
  adds each new tensor's bytes when an op creates it and subtracts them when it is freed. Shapes, dtypes and
  lifetimes are the real ones; what a trace cannot see is listed on :class:`LiveBytes`.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from tinyhistory.backbones.base import ContextTokens
from tinyhistory.geometry import BaseGeometry, Rate
from tinyhistory.history import EncoderConfig, HistoryEncoder

GIB = 2**30
LORA_RANK = 128
TEXT_TOKENS = 512  # WanPipeline's max_sequence_length (callers pass the preset's text.max_tokens)
# The paper's encoder widths (SPEC §9 defaults), one encoder at 4×4×2.
ENCODER = EncoderConfig(
    rate="4x4x2", variant="proposed", channels=(64, 128, 256, 512), attention_blocks=1, attention_heads=8
)


# -- exact counts ------------------------------------------------------------------------------------------------
@dataclass
class ModelCounts:
    """Exact parameter counts and the bytes they imply (one model, LoRA + its history encoders)."""

    model: str
    hidden_dim: int
    num_layers: int  # every DiT block, all of the family's block lists
    latent_channels: int
    frozen_params: int
    frozen_fp32_params: int  # of those, kept in fp32 by diffusers' _keep_in_fp32_modules
    lora_params: int
    lora_modules: int
    encoder_params: int
    block_params: int  # the largest DiT block without its LoRA (what FSDP all-gathers at a time)
    frozen_bytes: int
    trainable_bytes: int

    @property
    def total_bytes(self) -> int:
        """Frozen + trainable state on one GPU without sharding (plain DDP)."""
        return self.frozen_bytes + self.trainable_bytes

    def sharded_bytes(self, gpus: int) -> int:
        """Full shard: frozen and trainable state both split over ``gpus`` (flat-parameter padding ignored)."""
        return math.ceil(self.total_bytes / gpus)

    @property
    def gathered_block_bytes(self) -> int:
        """One block all-gathered for its forward/backward on top of the shard (bf16 weights)."""
        return 2 * self.block_params


def stored_bytes(named_parameters: Iterator[tuple[str, nn.Parameter]], keep: list[str]) -> tuple[int, int]:
    """(bytes, fp32 params) of frozen weights as ``from_pretrained(torch_dtype=torch.bfloat16)`` stores them.

    diffusers keeps ``_keep_in_fp32_modules`` (norms, scale_shift_table, time_embedder, rope) in fp32 with the rule
    ``name in param_name.split(".")`` (models/model_loading_utils.py); everything else is bf16. Trainable parameters
    (the LoRA) are skipped: they are counted apart.
    """
    total, fp32 = 0, 0
    for name, p in named_parameters:
        if p.requires_grad:
            continue
        if any(k in name.split(".") for k in keep):
            total += 4 * p.numel()
            fp32 += p.numel()
        else:
            total += 2 * p.numel()
    return total, fp32


def frozen_storage_bytes(transformer: nn.Module) -> tuple[int, int]:
    """(bytes, fp32 params) of a whole frozen DiT as stored (see :func:`stored_bytes`)."""
    return stored_bytes(transformer.named_parameters(), transformer._keep_in_fp32_modules or [])


def build_backbone(adapter: type, config: dict, rank: int = LORA_RANK, depth: int | None = None) -> nn.Module:
    """The family's adapter around its DiT of ``config`` on the meta device, frozen, with the LoRA attached the way
    the trainer does it (``adapter.lora_targets``, fp32 adapters); ``depth`` caps every block list (traces)."""
    import peft

    transformer = adapter.meta_transformer(config, depth)
    transformer.requires_grad_(False)
    with torch.device("meta"):
        if rank > 0:
            transformer.add_adapter(
                peft.LoraConfig(r=rank, lora_alpha=rank, target_modules=adapter.lora_targets, init_lora_weights=True)
            )
        for name, parameter in transformer.named_parameters():
            if "lora_" in name:
                parameter.data = parameter.data.float()
    return adapter(transformer)


def lora_modules(transformer: nn.Module) -> set[str]:
    """Names of the modules that carry a LoRA."""
    return {name.rsplit(".lora_A", 1)[0] for name, _ in transformer.named_parameters() if ".lora_A." in name}


def meta_encoder(encoder_config: EncoderConfig, backbone: nn.Module) -> HistoryEncoder:
    """One history encoder on the meta device at the DiT's width, latent channels and spatial patch."""
    with torch.device("meta"):
        return HistoryEncoder(encoder_config, backbone.in_channels, backbone.hidden_dim, patch=backbone.patch_size[1])


def count_model(
    adapter: type, name: str, config: dict, encoder_config: EncoderConfig = ENCODER, rank: int = LORA_RANK
) -> tuple[ModelCounts, nn.Module, HistoryEncoder]:
    """Exact counts for one model; also returns the meta-device backbone and encoder for the activation pass."""
    backbone = build_backbone(adapter, config, rank)
    encoder = meta_encoder(encoder_config, backbone)
    return model_counts(name, backbone, [encoder]), backbone, encoder


def block_bytes(backbone: nn.Module) -> list[int]:
    """Bytes of every frozen DiT block as stored (what group offload moves to the GPU at a time), in run order."""
    keep = backbone.transformer._keep_in_fp32_modules or []
    return [stored_bytes(block.named_parameters(), keep)[0] for block in backbone.blocks]


def model_counts(name: str, backbone: nn.Module, encoders: list[HistoryEncoder]) -> ModelCounts:
    """Exact counts of a meta ``backbone`` (LoRA attached by :func:`build_backbone`) and its ``encoders``.

    Kept apart from :func:`count_model` so that a caller comparing several encoders builds the DiT once."""
    transformer = backbone.transformer
    lora = sum(p.numel() for p in transformer.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in transformer.parameters() if not p.requires_grad)
    enc = sum(p.numel() for encoder in encoders for p in encoder.parameters())
    blocks = backbone.blocks
    block = max(sum(p.numel() for p in b.parameters() if not p.requires_grad) for b in blocks)
    frozen_bytes, frozen_fp32 = frozen_storage_bytes(transformer)
    return ModelCounts(
        model=name,
        hidden_dim=backbone.hidden_dim,
        num_layers=len(blocks),
        latent_channels=backbone.in_channels,
        frozen_params=frozen,
        frozen_fp32_params=frozen_fp32,
        lora_params=lora,
        lora_modules=len(lora_modules(transformer)),
        encoder_params=enc,
        block_params=block,
        frozen_bytes=frozen_bytes,
        trainable_bytes=16 * (lora + enc),
    )


# -- the activation formula of a training step -------------------------------------------------------------------
def encoder_activation_bytes(encoder: HistoryEncoder, patch_embed: nn.Module, hr: tuple, lr: tuple) -> int:
    """Sum of the HR branch's leaf-module outputs for one history, at 2 bytes (bf16), run on meta tensors.

    Each leaf output is what the next op keeps for backward (conv keeps its input, SiLU its input, …), so the sum is
    the branch's activation memory without checkpointing; shapes are exact, the rule is an estimate (it leaves out
    the attention's internals, small here: a compressed frame has ≤ 91 tokens).
    """
    if encoder.hr is None:
        return 0
    total = 0

    def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        total += 2 * output.numel()

    handles = [m.register_forward_hook(hook) for m in encoder.hr.modules() if not list(m.children())]
    try:
        with torch.device("meta"):
            encoder(torch.empty(hr), torch.empty(lr), patch_embed)
    finally:
        for h in handles:
            h.remove()
    return total


@dataclass
class ActivationEstimate:
    """One training step, batch 1 per GPU, gradient checkpointing on every DiT block. An estimate: ``kind`` says
    whether the family's formula or a trace of its forward gave the DiT terms."""

    model: str
    fps: float
    frames: int
    latent_shape: tuple[int, int, int]  # (T, H, W) of the history latent
    context_tokens: int
    target_tokens: int
    sequence: int
    kept_block_inputs: int
    shared_inputs: int
    one_block: int  # the largest block's saved tensors (recomputed in backward)
    every_block: int  # every block's saved tensors together (no checkpointing)
    encoder: int
    kind: str = "formula"

    @property
    def total(self) -> int:
        """All activation terms together (bytes)."""
        return self.kept_block_inputs + self.shared_inputs + self.one_block + self.encoder


def stage_activations(
    backbone: nn.Module,
    config: dict,
    encoders: list[HistoryEncoder],
    base: BaseGeometry,
    height: int,
    width: int,
    fps: float,
    seconds: float,
    context_tokens: int,
    target_latent_frames: int,
    lora_rank: int = LORA_RANK,
    text_tokens: int = TEXT_TOKENS,
    name: str = "",
) -> ActivationEstimate:
    """Training activations at ``height``×``width`` with ``context_tokens`` history tokens (``seconds`` of history at
    ``fps``, encoded by ``encoders``) and ``target_latent_frames`` target latent frames (stage I: the queried
    frames; stage II: the next segment).

    The DiT's terms (kept block inputs, shared inputs, one block recomputed in backward, every block without
    checkpointing) come from the family's ``activation_formula`` where it declares one (Wan: every term is listed
    there), else from :func:`traced_activations`. The history encoders' HR branches are not checkpointed: see
    :func:`encoder_activation_bytes`. Not counted: transient gradient buffers of the block being back-propagated,
    allocator fragmentation, the loss. All terms scale with the batch size.
    """
    frames = int(round(fps * seconds))
    _, h_tok, w_tok = base.token_grid(height, width, 0)
    target = target_latent_frames * h_tok * w_tok
    s = context_tokens + target
    latent = (base.latent_frames(frames), height // base.vae_spatial, width // base.vae_spatial)
    layers = len(backbone.blocks)
    formula = type(backbone).activation_formula(config, s, lora_rank, text_tokens)
    if formula is not None:
        kept, shared, one_block = formula
        every, kind = layers * one_block, "formula"
    else:
        shape = (backbone.in_channels, target_latent_frames, latent[1], latent[2])
        kept, shared, one_block, every = traced_activations(
            type(backbone), config, context_tokens, shape, lora_rank, text_tokens
        )
        kind = "trace"
    c = backbone.in_channels
    hr = (1, c, *latent)
    encoder = 0
    for enc in encoders:
        rate = enc.rate
        lr = (1, c, latent[0] // rate.t, latent[1] // rate.h, latent[2] // rate.w)
        encoder += encoder_activation_bytes(enc, backbone.patch_embedding, hr, lr)
    return ActivationEstimate(
        model=name,
        fps=fps,
        frames=frames,
        latent_shape=latent,
        context_tokens=context_tokens,
        target_tokens=target,
        sequence=s,
        kept_block_inputs=kept,
        shared_inputs=shared,
        one_block=one_block,
        every_block=every,
        encoder=encoder,
        kind=kind,
    )


def activations_without_checkpointing(estimate: ActivationEstimate) -> int:
    """Bytes of the same step without gradient checkpointing: every block keeps what it keeps when recomputed (its
    input is among those tensors), plus the shared inputs and the encoders."""
    return estimate.every_block + estimate.shared_inputs + estimate.encoder


class _FlashAttention(torch.autograd.Function):
    """Flash attention's memory for training on meta tensors: the output is new, and q, k, v, the output and the fp32
    log-sum-exp per query are what its backward keeps (no S×S matrix)."""

    @staticmethod
    def forward(ctx, query, key, value):
        out = query.new_empty(*query.shape[:-1], value.shape[-1])
        lse = query.new_empty(*query.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(query, key, value, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad):
        query, key, value, _, _ = ctx.saved_tensors
        return torch.empty_like(query), torch.empty_like(key), torch.empty_like(value)


def _flash_sdpa_saving(query, key, value, *args, **kwargs):
    return _FlashAttention.apply(query, key, value)


def _saved_after_forward(
    adapter: type, config: dict, depth: int, extra: str | None, checkpointing: bool, k: int, shape, rank, text_tokens
) -> int:
    """Bytes alive after one training forward (autograd's saved tensors and the output) of the DiT with every block
    list capped at ``depth`` blocks, ``extra`` of them one deeper, with the LoRA attached (the only trainable part of
    the DiT) and ``k`` context tokens that carry a gradient (the encoders train)."""
    layered = dict(config)
    for key in adapter.depth_keys:
        layered[key] = min(int(config[key]), depth + (key == extra))
    backbone = build_backbone(adapter, layered, rank)
    keep = backbone.transformer._keep_in_fp32_modules or []
    for name, parameter in backbone.transformer.named_parameters():
        if "lora_" not in name and not any(m in name.split(".") for m in keep):
            parameter.data = parameter.data.to(torch.bfloat16)
    if checkpointing:
        backbone.enable_gradient_checkpointing()
    c, n, h, w = shape
    with torch.device("meta"):
        latents = torch.empty(1, c, n, h, w, dtype=torch.bfloat16)
        t = torch.empty(1)
        text = backbone.blank_text(1, text_tokens, "meta")
        tokens = torch.empty(1, k, backbone.hidden_dim, dtype=torch.bfloat16, requires_grad=True)
        context = ContextTokens(tokens, torch.zeros(1, k, 3)) if k else None
    original = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = _flash_sdpa_saving
    try:
        with LiveBytes() as live:
            out = backbone(latents, t, text, context)
            saved = live.live
        del out
    finally:
        F.scaled_dot_product_attention = original
    return saved


def traced_activations(
    adapter: type, config: dict, context_tokens: int, target_shape: tuple[int, int, int, int], rank: int, text: int
) -> tuple[int, int, int, int]:
    """``(kept block inputs, shared inputs, one block recomputed, every block)`` bytes of one training step of the
    family's own forward, traced on the meta device: what is alive after a forward of a shallow copy of the DiT
    (one block of each list), with and without gradient checkpointing, and how it grows with one more block of each
    list. Runs in bf16 with fp32 LoRA and diffusers' fp32 modules (autocast does not exist on meta); attention as
    flash attention keeps it (q, k, v, output, log-sum-exp). ``target_shape``: ``(C, n, h, w)`` target latents."""
    args = (context_tokens, target_shape, rank, text)
    counts = {key: int(config[key]) for key in adapter.depth_keys}
    base_ckpt = _saved_after_forward(adapter, config, 1, None, True, *args)
    base_full = _saved_after_forward(adapter, config, 1, None, False, *args)
    kept = shared_blocks = every = one_block = 0
    for key, count in counts.items():
        per_kept = _saved_after_forward(adapter, config, 1, key, True, *args) - base_ckpt if count > 1 else 0
        per_full = _saved_after_forward(adapter, config, 1, key, False, *args) - base_full if count > 1 else 0
        kept += count * per_kept
        shared_blocks += per_kept
        every += count * per_full
        one_block = max(one_block, per_full)
    shared = base_ckpt - shared_blocks  # the shallow model's block inputs are counted in ``kept``
    return kept, shared, one_block, every


# -- traces of live tensors on the meta device -------------------------------------------------------------------
class LiveBytes(TorchDispatchMode):
    """Counts the bytes of tensors that ops create while active: ``live`` now, ``peak`` the most at once.

    Every op's outputs whose storage is new (not a view of an input, not an in-place result, not a parameter) add
    their storage's bytes; a ``weakref.finalize`` on the storage subtracts them when it is freed, which on the meta
    device happens exactly when it would on a GPU (reference counting, the same eager code). Tensors that existed
    before (weights, inputs) are not counted: callers add them as their own items.

    What it cannot see (say so wherever its numbers are shown): the CUDA caching allocator's rounding and
    fragmentation, kernel workspaces (cuBLAS, cuDNN convolutions), and anything a fused CUDA kernel does differently
    from the eager ops; attention must run through :func:`flash_attention` (on meta, SDPA would otherwise take the
    math path and materialise the S×S matrix that flash attention never stores).
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {id(a.untyped_storage()) for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)}
        for tensor in tree_flatten(out)[0]:
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            key = id(storage)
            if key in self._seen or key in inputs:
                continue
            size = storage.nbytes()
            self._seen.add(key)
            self.live += size
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._free, size, key)
        return out

    def _free(self, size: int, key: int) -> None:
        self.live -= size
        self._seen.discard(key)


def _flash_sdpa(query, key, value, *args, **kwargs):
    """What flash attention allocates: the output only, shaped like the query with the values' width."""
    return query.new_empty(*query.shape[:-1], value.shape[-1])


@contextlib.contextmanager
def flash_attention() -> Iterator[None]:
    """``F.scaled_dot_product_attention`` as flash attention's memory footprint (output only) while active.

    diffusers' attention dispatch and the VAE look the function up at call time, so replacing the module attribute
    reaches them; it is put back however the block ends.
    """
    original = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = _flash_sdpa
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


def meta_bf16_backbone(adapter: type, config: dict, depth: int | None = None) -> nn.Module:
    """The family's adapter around a meta DiT stored as generation loads it (bf16, diffusers' fp32 modules in fp32);
    ``depth`` caps every block list (a trace needs two blocks: every block is alike)."""
    transformer = adapter.meta_transformer(config, depth)
    keep = transformer._keep_in_fp32_modules or []
    for name, parameter in transformer.named_parameters():
        if not any(k in name.split(".") for k in keep):
            parameter.data = parameter.data.to(torch.bfloat16)
    return adapter(transformer)


@dataclass
class StepTrace:
    """One guided denoising step at full depth (bytes): ``working`` the step's own tensors at their peak (the KV
    cache excluded), ``kv_cache`` the history's keys and values for the segment (0 without the cache)."""

    working: int
    kv_cache: int


# Blocks a DiT trace runs of each block list: the live set of one block does not depend on how many came before
# (only the KV cache grows with depth, and it is scaled exactly), so two give the full model's peak at a fraction of
# the time.
TRACE_LAYERS = 2


def dit_step_trace(
    adapter: type,
    config: dict,
    context_tokens: int,
    target_shape: tuple[int, int, int, int],
    kv_cache: bool,
    batch: int = 2,
    text_tokens: int = TEXT_TOKENS,
) -> StepTrace:
    """The live-tensor peak of one denoising step as ``sample_segment`` runs it (CFG: ``batch`` 2 = both branches).

    ``target_shape``: ``(C, n, h, w)`` of the segment's latents. Without the cache: one forward of
    ``[context; targets]``; with it (``history.kv_cache``, where the family has it): ``build_context_cache`` (the
    context alone through the blocks, keys and values kept) and then one cached forward of the targets while the
    cache lives, as every step of the segment does. Runs in bf16 without autocast (autocast does not exist on the
    meta device; matmul outputs are bf16 either way, and explicit fp32 norms and modulation are traced as written).
    """
    depth = sum(int(config[key]) for key in adapter.depth_keys)
    backbone = meta_bf16_backbone(adapter, config, TRACE_LAYERS)
    traced = len(backbone.blocks)
    if kv_cache:
        backbone.use_kv_cache()
    d = backbone.hidden_dim
    c, n, h, w = target_shape
    with torch.device("meta"):
        latents = torch.empty(batch, c, n, h, w, dtype=torch.bfloat16)
        t = torch.empty(batch, dtype=torch.float64)
        text = backbone.blank_text(batch, text_tokens, "meta")
        positions = torch.arange(n)[None].expand(batch, n)
        context = None
        if context_tokens:
            context = ContextTokens(
                torch.empty(batch, context_tokens, d, dtype=torch.bfloat16),
                torch.zeros(batch, context_tokens, 3, dtype=torch.long),
            )
    per_layer_cache = 0
    with torch.no_grad(), flash_attention(), LiveBytes() as live:
        if kv_cache and context is not None:
            cache = backbone.build_context_cache(context, text)
            traced_cache = sum(x.untyped_storage().nbytes() for x in (*cache.keys, *cache.values))
            per_layer_cache = traced_cache // traced
            out = backbone(latents, t, text, None, positions, context_cache=cache)
        else:
            out = backbone(latents, t, text, context, positions)
        del out
    return StepTrace(working=live.peak - per_layer_cache * traced, kv_cache=per_layer_cache * depth)


def kv_cache_bytes(num_layers: int, context_tokens: int, hidden_dim: int, branches: int = 2) -> int:
    """A history KV cache: keys + values × blocks × context tokens × hidden × bf16 × cached batch (2: one per CFG
    branch; 1: a block-causal cache, which reads no prompt and serves both branches)."""
    return 2 * num_layers * context_tokens * hidden_dim * 2 * branches


@dataclass
class CodecTrace:
    """A VAE stream of one segment (bytes): ``working`` its tensors at their peak beyond what it carries, ``cache``
    what it carries from segment to segment (a causal cache, or a window of latents; it stays on the GPU while the
    DiT denoises the next segment)."""

    working: int
    cache: int


def decode_trace(codec: type, vae_config: dict, segment_latents: int, height: int, width: int) -> CodecTrace:
    """Trace the codec's own stream decoder (``codec.meta(vae_config)``: the family's VAE on meta, fp32) as a session
    drives it: a first push (one latent frame: it starts the stream) and then a whole segment of ``segment_latents``
    latent frames at ``height``×``width``, every later segment's cost (the stream's cache or window full, the
    outputs concatenated)."""
    meta = codec.meta(vae_config)
    s = meta.spatial_factor
    decoder = meta.stream_decoder()
    latents = torch.empty(1, meta.latent_channels, segment_latents, height // s, width // s, device="meta")
    with torch.no_grad(), flash_attention(), LiveBytes() as live:
        decoder.push(latents[:, :, :1])
        decoder.push(latents)
        cache = live.live
    return CodecTrace(working=live.peak - cache, cache=cache)


def lowres_trace(
    codec: type, vae_config: dict, rate: Rate, segment_latents: int, height: int, width: int
) -> CodecTrace:
    """Trace the LR branch's ``LowResStream`` (pixels averaged by ``rate``, then the codec's stream encoder) on the
    frames of a first segment from nothing and of a later one, as the session pushes every decoded segment."""
    from tinyhistory.codecs.streaming import LowResStream

    meta = codec.meta(vae_config)
    f = meta.temporal_factor
    stream = LowResStream(meta, rate)
    pixels = torch.empty(1, 3, f * segment_latents, height, width, device="meta")
    with torch.no_grad(), flash_attention(), LiveBytes() as live:
        first = stream.push(pixels[:, :, : 1 + f * (segment_latents - 1)])
        del first
        later = stream.push(pixels)
        del later
        cache = live.live
    return CodecTrace(working=live.peak - cache, cache=cache)


# -- tiers -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TierTokens:
    """Token counts of a tier layout (``history.tiers``) after some history: ``view`` what the targets attend to
    (each tier's span at its rate), ``every_rate`` every rate's tokens of every whole block (what the session's
    producers keep, and what a stacked layout's training context holds), ``cached`` what the stacked layout's
    ``StackedTierCache`` keeps (every rate's blocks the targets see plus one window; the view for the other
    layout)."""

    view: int
    every_rate: int
    cached: int


def tier_tokens(plan, frames: int, grid_hw: tuple[int, int]) -> TierTokens:
    """:class:`TierTokens` of ``plan`` (a ``TierPlan``) after ``frames`` latent frames on a DiT grid of ``grid_hw``
    tokens per frame. ``cached`` follows ``StackedTierCache._prune`` in steady state: rate i keeps its blocks from
    ``min(its tier's first block, the first block of the next block's window)`` on (tiers only move forward, so
    what was cut stays cut)."""
    h, w = grid_hw
    block = plan.block
    whole = frames // block * block
    blocks = whole // block
    view = every = cached = 0
    for rate, (start, end) in zip(plan.rates, plan.spans(frames), strict=True):
        per_block = block // rate.t * (h // rate.h) * (w // rate.w)
        view += (end - start) // block * per_block
        every += blocks * per_block
        if plan.stacked:
            keep = max(0, min(start // block, blocks - plan.window_blocks + 1))
            cached += (blocks - keep) * per_block
    return TierTokens(view, every, cached if plan.stacked else view)
