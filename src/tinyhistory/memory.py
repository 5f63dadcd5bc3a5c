"""Memory at real size without a GPU: exact parameter bytes, a formula for training activations, and traces of
generation's live tensors on the meta device.

Why this exists: before renting a GPU (or buying one) a user wants to know whether a Wan DiT + LoRA + history encoder
trains on a 24 GB card, and whether generation fits 8 GB with ``--offload``; ``tinyhistory plan`` answers from what
this module computes, and ``benchmarks/memory_estimate.py`` prints the same counts and formula as tables. Nothing
here downloads weights or allocates real memory: every model is built on the ``meta`` device from its diffusers
config, so a 14B DiT costs nothing.

Three kinds of numbers, kept apart on purpose (every caller labels which is which):

* **exact**: parameter counts and the bytes they imply for a storage rule (:func:`count_model`,
  :func:`component_params`): frozen weights as ``from_pretrained(torch_dtype=bfloat16)`` stores them (bf16 except
  diffusers' ``_keep_in_fp32_modules``), trainable weights fp32 + fp32 grads + AdamW's two fp32 moments;
* **formula** (an estimate): activation memory of one training step, with and without gradient checkpointing
  (:func:`stage_activations`; every term is listed there);
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

from tinyhistory.geometry import BaseGeometry, Rate, context_report
from tinyhistory.history import EncoderConfig, HistoryEncoder

GIB = 2**30
LORA_RANK = 128
TEXT_TOKENS = 512  # WanPipeline's max_sequence_length: every prompt is 512 UMT5 states
# Every self/cross-attention projection and both FFN layers of every block, as tinyhistory.train.lora.add_lora attaches
# it (backbone.lora_targets); spelled out here so the count does not move silently, and compared with the project's
# regex by benchmarks/memory_estimate.py (``lora_targets_match_project``).
LORA_TARGETS = (
    r"blocks\.\d+\.(attn1\.(to_q|to_k|to_v|to_out\.0)|attn2\.(to_q|to_k|to_v|to_out\.0)|ffn\.net\.0\.proj|ffn\.net\.2)"
)
# The paper's encoder widths (SPEC §9 defaults), one encoder at 4×4×2.
ENCODER = EncoderConfig(
    rate="4x4x2", variant="proposed", channels=(64, 128, 256, 512), attention_blocks=1, attention_heads=8
)

# UMT5-XXL encoder: text_encoder/config.json of the Wan *-Diffusers repos (d_model 4096, d_ff 10240, 24 layers,
# 64 heads, vocab 256384, gated-gelu, untied); Wan ships it in bf16.
UMT5_XXL = dict(
    d_model=4096,
    d_ff=10240,
    d_kv=64,
    num_heads=64,
    num_layers=24,
    num_decoder_layers=24,
    vocab_size=256384,
    feed_forward_proj="gated-gelu",
    dense_act_fn="gelu_new",
    is_gated_act=True,
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    scalable_attention=True,
    tie_word_embeddings=False,
    layer_norm_epsilon=1e-6,
)
# VAEs: the Wan 2.1 VAE is AutoencoderKLWan's default config (convert_vae: ``config={}``); the Wan 2.2 VAE is the
# convert script's vae22_diffusers_config (latents_mean/std omitted: normalisation constants, not parameters).
VAE_CONFIGS = {
    "Wan 2.1 VAE (1.3B, 14B, A14B)": {},
    "Wan 2.2 VAE (TI2V-5B)": dict(
        base_dim=160,
        z_dim=48,
        is_residual=True,
        in_channels=12,
        out_channels=12,
        decoder_base_dim=256,
        scale_factor_temporal=4,
        scale_factor_spatial=16,
        patch_size=2,
    ),
}
# Which VAE each embedded DiT (tinyhistory.model_configs.CONFIGS) decodes with: Wan 2.2 A14B keeps Wan 2.1's VAE.
MODEL_VAE = {
    "Wan2.1-T2V-1.3B": "Wan 2.1 VAE (1.3B, 14B, A14B)",
    "Wan2.1-T2V-14B": "Wan 2.1 VAE (1.3B, 14B, A14B)",
    "Wan2.2-TI2V-5B": "Wan 2.2 VAE (TI2V-5B)",
    "Wan2.2-T2V-A14B (high-noise)": "Wan 2.1 VAE (1.3B, 14B, A14B)",
}


# -- exact counts ------------------------------------------------------------------------------------------------
@dataclass
class ModelCounts:
    """Exact parameter counts and the bytes they imply (one model, LoRA + one history encoder)."""

    model: str
    hidden_dim: int
    ffn_dim: int
    num_layers: int
    latent_channels: int
    frozen_params: int
    frozen_fp32_params: int  # of those, kept in fp32 by diffusers' _keep_in_fp32_modules
    lora_params: int
    lora_modules: int
    encoder_params: int
    block_params: int  # one WanTransformerBlock without its LoRA (what FSDP all-gathers at a time)
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


def build_transformer(config: dict, rank: int = LORA_RANK, targets: str = LORA_TARGETS) -> nn.Module:
    """The DiT on the meta device, frozen, with the LoRA attached the way the trainer does it (fp32 adapters)."""
    import peft
    from diffusers import WanTransformer3DModel

    with torch.device("meta"):
        transformer = WanTransformer3DModel.from_config(config)
        transformer.requires_grad_(False)
        if rank > 0:
            transformer.add_adapter(
                peft.LoraConfig(r=rank, lora_alpha=rank, target_modules=targets, init_lora_weights=True)
            )
        for name, parameter in transformer.named_parameters():
            if "lora_" in name:
                parameter.data = parameter.data.float()
    return transformer


def lora_modules(transformer: nn.Module) -> set[str]:
    """Names of the modules that carry a LoRA."""
    return {name.rsplit(".lora_A", 1)[0] for name, _ in transformer.named_parameters() if ".lora_A." in name}


def count_model(
    name: str,
    config: dict,
    encoder_config: EncoderConfig = ENCODER,
    rank: int = LORA_RANK,
    targets: str = LORA_TARGETS,
) -> tuple[ModelCounts, nn.Module, HistoryEncoder]:
    """Exact counts for one model; also returns the meta-device transformer and encoder for the activation pass."""
    transformer = build_transformer(config, rank, targets)
    encoder = meta_encoder(encoder_config, config)
    return model_counts(name, config, transformer, encoder), transformer, encoder


def meta_encoder(encoder_config: EncoderConfig, config: dict) -> HistoryEncoder:
    """One history encoder on the meta device at the DiT ``config``'s width and latent channels."""
    hidden = config["num_attention_heads"] * config["attention_head_dim"]
    with torch.device("meta"):
        return HistoryEncoder(encoder_config, config["in_channels"], hidden, patch=config["patch_size"][1])


def model_counts(name: str, config: dict, transformer: nn.Module, encoder: HistoryEncoder | None) -> ModelCounts:
    """Exact counts of a meta ``transformer`` (LoRA attached by :func:`build_transformer`) and ``encoder``.

    Kept apart from :func:`count_model` so that a caller comparing several encoders builds the DiT once."""
    lora = sum(p.numel() for p in transformer.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in transformer.parameters() if not p.requires_grad)
    enc = sum(p.numel() for p in encoder.parameters()) if encoder is not None else 0
    block = sum(p.numel() for p in transformer.blocks[0].parameters() if not p.requires_grad)
    frozen_bytes, frozen_fp32 = frozen_storage_bytes(transformer)
    return ModelCounts(
        model=name,
        hidden_dim=config["num_attention_heads"] * config["attention_head_dim"],
        ffn_dim=config["ffn_dim"],
        num_layers=config["num_layers"],
        latent_channels=config["in_channels"],
        frozen_params=frozen,
        frozen_fp32_params=frozen_fp32,
        lora_params=lora,
        lora_modules=len(lora_modules(transformer)),
        encoder_params=enc,
        block_params=block,
        frozen_bytes=frozen_bytes,
        trainable_bytes=16 * (lora + enc),
    )


def block_storage_bytes(transformer: nn.Module) -> int:
    """Bytes of one frozen ``WanTransformerBlock`` as stored (what group offload moves to the GPU at a time)."""
    return stored_bytes(transformer.blocks[0].named_parameters(), transformer._keep_in_fp32_modules or [])[0]


def component_params(kind: str, config: dict) -> int:
    """Exact parameter count of a ``"umt5"`` text encoder or a ``"vae"`` (AutoencoderKLWan) from its config dict."""
    with torch.device("meta"):
        if kind == "umt5":
            from transformers import UMT5Config, UMT5EncoderModel

            model = UMT5EncoderModel(UMT5Config.from_dict(dict(config)))
        elif kind == "vae":
            from diffusers import AutoencoderKLWan

            model = AutoencoderKLWan.from_config(dict(config))
        else:
            raise ValueError(f"unknown component kind {kind!r}")
    return sum(p.numel() for p in model.parameters())


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
    """One training step, batch 1 per GPU, gradient checkpointing on every DiT block. An estimate (formula)."""

    model: str
    fps: float
    frames: int
    latent_shape: tuple[int, int, int]  # (T, H, W) of the history latent
    context_tokens: int
    target_tokens: int
    sequence: int
    kept_block_inputs: int
    shared_inputs: int
    one_block: int
    encoder: int

    @property
    def total(self) -> int:
        """All activation terms together (bytes)."""
        return self.kept_block_inputs + self.shared_inputs + self.one_block + self.encoder


def stage_activations(
    counts: ModelCounts,
    head_dim: int,
    encoder: HistoryEncoder | None,
    patch_embedding: nn.Module,
    base: BaseGeometry,
    height: int,
    width: int,
    fps: float,
    seconds: float,
    rate: Rate,
    target_latent_frames: int,
    lora_rank: int = LORA_RANK,
    text_tokens: int = TEXT_TOKENS,
) -> ActivationEstimate:
    """Training activations at ``height``×``width``, ``seconds`` of history at ``fps`` and ``rate``, and
    ``target_latent_frames`` target latent frames (stage I: the queried frames; stage II: the next segment).

    Terms (bytes; S = context + target tokens, D = hidden, F = FFN width, r = LoRA rank, L = layers):

    * kept block inputs: ``S·D·2·L`` (checkpointing keeps only each block's bf16 input);
    * shared block inputs, kept once: per-token timestep projection ``S·6·D·2`` (this project gives every token its
      own timestep: context 0, targets t), RoPE cos/sin ``2·S·head_dim·4``, text states ``512·D·2``;
    * one block recomputed in backward: ``80·D + 4·F + 16·r`` bytes per token, what autograd keeps in a
      ``WanTransformerBlock`` under bf16 autocast with flash attention (no S×S matrix):

      - self-attention 54·D: fp32 LayerNorm input (4D), fp32 ``1 + scale`` (4D), the fp32 per-token modulation
        ``scale_shift_table + temb`` of which gate views stay alive (6 × 4D), bf16 norm output (2D), q and k before
        RMSNorm in bf16 and the fp32 copy RMSNorm squares (2 × 6D), SDPA's q, k, v and output (4 × 2D);
      - cross-attention 16·D: fp32 LayerNorm input (4D), its bf16 output (2D), q before RMSNorm (6D), SDPA's q and
        output (2 × 2D); K/V over the 512 text tokens add ``10·512·D`` bytes per block;
      - FFN 10·D + 4·F: fp32 LayerNorm input and ``1 + c_scale`` (2 × 4D), bf16 norm output (2D), the GELU's input
        and output (2 × 2F);
      - LoRA: the rank-r output of ``lora_A`` in each of the 8 adapted linears that run on the S tokens (8 × 2r);

    * the history encoder's HR branch, not checkpointed: see :func:`encoder_activation_bytes`.

    Without gradient checkpointing every block keeps what the recomputed block keeps: see
    :func:`activations_without_checkpointing`. Not counted: transient gradient buffers of the block being
    back-propagated, allocator fragmentation, the loss. All terms scale with the batch size.
    """
    report = context_report(base, height, width, fps, seconds, [rate])
    frames = int(round(fps * seconds))
    _, h_tok, w_tok = report.token_grid
    target = target_latent_frames * h_tok * w_tok
    s, d, f, layers = report.history_tokens + target, counts.hidden_dim, counts.ffn_dim, counts.num_layers
    latent = (base.latent_frames(frames), height // base.vae_spatial, width // base.vae_spatial)
    c = counts.latent_channels
    hr = (1, c, *latent)
    lr = (1, c, latent[0] // rate.t, latent[1] // rate.h, latent[2] // rate.w)
    return ActivationEstimate(
        model=counts.model,
        fps=fps,
        frames=frames,
        latent_shape=latent,
        context_tokens=report.history_tokens,
        target_tokens=target,
        sequence=s,
        kept_block_inputs=s * d * 2 * layers,
        shared_inputs=s * 6 * d * 2 + 2 * s * head_dim * 4 + text_tokens * d * 2,
        one_block=s * (80 * d + 4 * f + 16 * lora_rank) + 10 * text_tokens * d,
        encoder=encoder_activation_bytes(encoder, patch_embedding, hr, lr) if encoder is not None else 0,
    )


def activations_without_checkpointing(estimate: ActivationEstimate, num_layers: int) -> int:
    """Bytes of the same step without gradient checkpointing: every one of the ``num_layers`` blocks keeps what the
    recomputed block keeps (its input is among those tensors), plus the shared inputs and the encoder."""
    return num_layers * estimate.one_block + estimate.shared_inputs + estimate.encoder


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


def meta_bf16_backbone(config: dict, num_layers: int | None = None):
    """The DiT adapter around a meta transformer stored as generation loads it (bf16, diffusers' fp32 modules in
    fp32); ``num_layers`` replaces the config's depth (a trace needs two blocks: every block is alike)."""
    from diffusers import WanTransformer3DModel

    from tinyhistory.backbones.wan import WanBackbone

    config = dict(config) if num_layers is None else {**config, "num_layers": num_layers}
    with torch.device("meta"):
        transformer = WanTransformer3DModel.from_config(config)
    keep = transformer._keep_in_fp32_modules or []
    for name, parameter in transformer.named_parameters():
        if not any(k in name.split(".") for k in keep):
            parameter.data = parameter.data.to(torch.bfloat16)
    return WanBackbone(transformer)


@dataclass
class StepTrace:
    """One guided denoising step at full depth (bytes): ``working`` the step's own tensors at their peak (the KV
    cache excluded), ``kv_cache`` the history's keys and values for the segment (0 without the cache)."""

    working: int
    kv_cache: int


# Blocks a DiT trace runs: the live set of one block does not depend on how many came before (only the KV cache
# grows with depth, and it is scaled exactly), so two blocks give the full model's peak at a fraction of the time.
TRACE_LAYERS = 2


def dit_step_trace(
    config: dict,
    context_tokens: int,
    target_shape: tuple[int, int, int, int],
    kv_cache: bool,
    batch: int = 2,
    text_tokens: int = TEXT_TOKENS,
) -> StepTrace:
    """The live-tensor peak of one denoising step as ``sample_segment`` runs it (CFG: ``batch`` 2 = both branches).

    ``target_shape``: ``(C, n, h, w)`` of the segment's latents. Without the cache: one forward of
    ``[context; targets]``; with it (``history.kv_cache``): ``build_context_cache`` (the context alone through the
    blocks, keys and values kept) and then one cached forward of the targets while the cache lives, as every step of
    the segment does. Runs in bf16 without autocast (autocast does not exist on the meta device; matmul outputs are
    bf16 either way, and the Wan block's explicit fp32 norms and modulation are traced as written).
    """
    from tinyhistory.backbones.base import ContextTokens
    from tinyhistory.text.condition import TextCondition

    depth = config["num_layers"]
    traced = min(TRACE_LAYERS, depth)
    backbone = meta_bf16_backbone(config, traced)
    if kv_cache:
        backbone.use_kv_cache()
    d = backbone.hidden_dim
    c, n, h, w = target_shape
    with torch.device("meta"):
        latents = torch.empty(batch, c, n, h, w, dtype=torch.bfloat16)
        t = torch.empty(batch, dtype=torch.float64)
        text = TextCondition(torch.empty(batch, text_tokens, config["text_dim"]))
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
    cache_bytes = per_layer_cache * depth
    return StepTrace(working=live.peak - per_layer_cache * traced, kv_cache=cache_bytes)


def kv_cache_bytes(num_layers: int, context_tokens: int, hidden_dim: int, branches: int = 2) -> int:
    """The history KV cache of one segment: keys + values × blocks × context tokens × hidden × bf16 × CFG branches."""
    return 2 * num_layers * context_tokens * hidden_dim * 2 * branches


@dataclass
class CodecTrace:
    """A VAE stream of one segment (bytes): ``working`` its tensors at their peak beyond its causal cache, ``cache``
    the cache it carries from segment to segment (it stays on the GPU while the DiT denoises the next segment)."""

    working: int
    cache: int


def meta_vae(config: dict):
    """``AutoencoderKLWan`` on the meta device in fp32, as generation keeps it (the normalisation constants, which a
    bare convert-script config omits, are filled to the latent width: they are not parameters)."""
    from diffusers import AutoencoderKLWan

    z = int(config.get("z_dim", 16))
    with torch.device("meta"):
        return AutoencoderKLWan.from_config({**config, "latents_mean": [0.0] * z, "latents_std": [1.0] * z})


def decode_trace(vae_config: dict, segment_latents: int, height: int, width: int) -> CodecTrace:
    """Trace the project's own ``WanStreamDecoder`` as a session drives it: a first push (one latent frame: it
    starts the causal cache) and then a whole segment of ``segment_latents`` latent frames at ``height``×``width``,
    every later segment's cost (the cache full, each latent frame decoded to 4 frames, the outputs concatenated)."""
    from tinyhistory.codecs.wan import WanVAECodec

    codec = WanVAECodec(meta_vae(vae_config))
    s = codec.spatial_factor
    decoder = codec.stream_decoder()
    latents = torch.empty(1, codec.latent_channels, segment_latents, height // s, width // s, device="meta")
    with torch.no_grad(), flash_attention(), LiveBytes() as live:
        decoder.push(latents[:, :, :1])
        decoder.push(latents)
        cache = live.live
    return CodecTrace(working=live.peak - cache, cache=cache)


def lowres_trace(vae_config: dict, rate: Rate, segment_latents: int, height: int, width: int) -> CodecTrace:
    """Trace the LR branch's ``LowResStream`` (pixels averaged by ``rate``, then the VAE's stream encoder) on the
    frames of a first segment from nothing and of a later one, as the session pushes every decoded segment."""
    from tinyhistory.codecs.streaming import LowResStream
    from tinyhistory.codecs.wan import WanVAECodec

    codec = WanVAECodec(meta_vae(vae_config))
    f = codec.temporal_factor
    stream = LowResStream(codec, rate)
    pixels = torch.empty(1, 3, f * segment_latents, height, width, device="meta")
    with torch.no_grad(), flash_attention(), LiveBytes() as live:
        first = stream.push(pixels[:, :, : 1 + f * (segment_latents - 1)])
        del first
        later = stream.push(pixels)
        del later
        cache = live.live
    return CodecTrace(working=live.peak - cache, cache=cache)
