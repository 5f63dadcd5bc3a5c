"""What trains and what stays frozen when the history encoder + LoRA are trained on a real Wan DiT, and what it costs.

    python benchmarks/memory_estimate.py            # markdown tables; results are recorded in BENCHMARKS.md
    python benchmarks/memory_estimate.py --json     # the same numbers as JSON

Why this exists: the tiny preset trains on a laptop CPU, the paper's setting does not, and before renting GPUs one
wants to know whether a 14B DiT + LoRA + history encoder fits per GPU (plain DDP) or needs FSDP
(``configs/accelerate/fsdp.yaml``). Nothing here downloads weights: every model is built on the ``meta`` device from
the diffusers configs embedded below, so the counts are exact and cost no memory.

Two kinds of numbers, kept apart on purpose:

* **exact**: parameter counts (frozen DiT, LoRA, history encoder, UMT5-XXL, VAE) and the bytes they imply for a
  given storage rule (frozen weights as ``from_pretrained(torch_dtype=bfloat16)`` stores them, i.e. bf16 except
  diffusers' ``_keep_in_fp32_modules``; trainable weights fp32 + fp32 grads + AdamW's two fp32 moments);
* **estimated (a formula)**: activation memory of one stage-I step with gradient checkpointing. See
  :func:`activation_estimate` for every term; it is no measurement, which needs the GPU machine.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass

import peft
import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from torch import nn
from transformers import UMT5Config, UMT5EncoderModel

from tinyhistory.backbones.wan import WanBackbone
from tinyhistory.geometry import Rate, context_report, get_base
from tinyhistory.history import EncoderConfig, HistoryEncoder
from tinyhistory.model_configs import CONFIGS, GEOMETRY, hf_kwargs

GIB = 2**30
FSDP_GPUS = 8
LORA_RANK = 128
# Every self/cross-attention projection and both FFN layers of every block, as tinyhistory.train.lora.add_lora attaches
# it (backbone.lora_targets); spelled out here so the count does not move silently, and compared with the project's
# regex in the output (``lora_targets_match_project``).
LORA_TARGETS = (
    r"blocks\.\d+\.(attn1\.(to_q|to_k|to_v|to_out\.0)|attn2\.(to_q|to_k|to_v|to_out\.0)|ffn\.net\.0\.proj|ffn\.net\.2)"
)
# The paper's encoder widths (SPEC §9 defaults), one encoder at 4×4×2.
ENCODER = EncoderConfig(
    rate="4x4x2", variant="proposed", channels=(64, 128, 256, 512), attention_blocks=1, attention_heads=8
)
HEIGHT, WIDTH, HISTORY_SECONDS, TARGET_LATENT_FRAMES, TEXT_TOKENS = 480, 832, 20.0, 3, 512

# --- transformer/config.json of each model, and its geometry: embedded once in tinyhistory.model_configs (the cost
# model, ``tinyhistory cost``, builds the same DiTs); see that module for where every value comes from.

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


@dataclass
class ModelCounts:
    """Exact parameter counts and the bytes they imply (one model, LoRA r=128 + one 4×4×2 encoder)."""

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

    @property
    def fsdp_bytes_per_gpu(self) -> int:
        """Full shard: frozen and trainable state both split over the GPUs (flat-parameter padding ignored)."""
        return math.ceil(self.total_bytes / FSDP_GPUS)

    @property
    def gathered_block_bytes(self) -> int:
        """One block all-gathered for its forward/backward on top of the shard (bf16 weights)."""
        return 2 * self.block_params


def frozen_storage_bytes(transformer: WanTransformer3DModel) -> tuple[int, int]:
    """(bytes, fp32 params) of the frozen weights as ``from_pretrained(torch_dtype=torch.bfloat16)`` stores them.

    diffusers keeps ``_keep_in_fp32_modules`` (norms, scale_shift_table, time_embedder, rope) in fp32 with the rule
    ``name in param_name.split(".")`` (models/model_loading_utils.py); everything else is bf16.
    """
    keep = transformer._keep_in_fp32_modules or []
    total, fp32 = 0, 0
    for name, p in transformer.named_parameters():
        if p.requires_grad:
            continue
        if any(k in name.split(".") for k in keep):
            total += 4 * p.numel()
            fp32 += p.numel()
        else:
            total += 2 * p.numel()
    return total, fp32


def build_transformer(config: dict) -> WanTransformer3DModel:
    """The DiT on the meta device, frozen, with the LoRA attached the way the trainer does it (fp32 adapters)."""
    with torch.device("meta"):
        transformer = WanTransformer3DModel(**hf_kwargs(config))
        transformer.requires_grad_(False)
        transformer.add_adapter(
            peft.LoraConfig(r=LORA_RANK, lora_alpha=LORA_RANK, target_modules=LORA_TARGETS, init_lora_weights=True)
        )
        for name, parameter in transformer.named_parameters():
            if "lora_" in name:
                parameter.data = parameter.data.float()
    return transformer


def lora_modules(transformer: nn.Module) -> set[str]:
    """Names of the modules that carry a LoRA."""
    return {name.rsplit(".lora_A", 1)[0] for name, _ in transformer.named_parameters() if ".lora_A." in name}


def count_model(name: str, config: dict) -> tuple[ModelCounts, WanTransformer3DModel, HistoryEncoder]:
    """Exact counts for one model; also returns the meta-device transformer and encoder for the activation pass."""
    transformer = build_transformer(config)
    hidden = config["num_attention_heads"] * config["attention_head_dim"]
    with torch.device("meta"):
        encoder = HistoryEncoder(ENCODER, config["in_channels"], hidden, patch=config["patch_size"][1])
    lora = sum(p.numel() for p in transformer.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in transformer.parameters() if not p.requires_grad)
    enc = sum(p.numel() for p in encoder.parameters())
    block = sum(p.numel() for p in transformer.blocks[0].parameters() if not p.requires_grad)
    frozen_bytes, frozen_fp32 = frozen_storage_bytes(transformer)
    counts = ModelCounts(
        model=name,
        hidden_dim=hidden,
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
        # fp32 weight + fp32 grad + AdamW exp_avg + exp_avg_sq = 16 bytes per trainable parameter
        trainable_bytes=16 * (lora + enc),
    )
    return counts, transformer, encoder


def encoder_activation_bytes(encoder: HistoryEncoder, patch_embed: nn.Module, hr: tuple, lr: tuple) -> int:
    """Sum of the HR branch's leaf-module outputs for one history, at 2 bytes (bf16), run on meta tensors.

    Each leaf output is what the next op keeps for backward (conv keeps its input, SiLU its input, …), so the sum is
    the branch's activation memory without checkpointing; shapes are exact, the rule is an estimate (it leaves out
    the attention's internals, small here: a compressed frame has ≤ 91 tokens).
    """
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
    """One stage-I step, batch 1 per GPU, gradient checkpointing on every DiT block. An estimate (formula)."""

    model: str
    fps: float
    frames: int
    latent_shape: tuple[int, int, int]  # (T, H, W) of the 20-s history latent
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


def activation_estimate(
    counts: ModelCounts,
    config: dict,
    transformer: WanTransformer3DModel,
    encoder: HistoryEncoder,
    geometry: str,
    fps: float,
) -> ActivationEstimate:
    """Stage-I activations at 480×832, a 20-s history at ``fps``, 4×4×2 context and 3 queried latent frames.

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

    Not counted: transient gradient buffers of the block being back-propagated, allocator fragmentation, the loss.
    """
    base = get_base(geometry)
    if (base.hidden_dim, base.latent_channels) != (counts.hidden_dim, counts.latent_channels):
        raise RuntimeError(f"tinyhistory.geometry {geometry!r} disagrees with {counts.model}'s config")
    rate = Rate.parse(ENCODER.rate)
    report = context_report(base, HEIGHT, WIDTH, fps, HISTORY_SECONDS, [rate])
    frames = int(round(fps * HISTORY_SECONDS))
    _, h_tok, w_tok = report.token_grid
    target = TARGET_LATENT_FRAMES * h_tok * w_tok
    s, d, f, layers = report.history_tokens + target, counts.hidden_dim, counts.ffn_dim, counts.num_layers
    head_dim = config["attention_head_dim"]
    latent = (base.latent_frames(frames), HEIGHT // base.vae_spatial, WIDTH // base.vae_spatial)
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
        shared_inputs=s * 6 * d * 2 + 2 * s * head_dim * 4 + TEXT_TOKENS * d * 2,
        one_block=s * (80 * d + 4 * f + 16 * LORA_RANK) + 10 * TEXT_TOKENS * d,
        encoder=encoder_activation_bytes(encoder, transformer.patch_embedding, hr, lr),
    )


def not_loaded_counts() -> list[dict]:
    """UMT5-XXL and the VAEs: only needed to build the cache (``tinyhistory data prepare``), not to train from it."""
    rows = []
    with torch.device("meta"):
        umt5 = UMT5EncoderModel(UMT5Config(**UMT5_XXL))
    n = sum(p.numel() for p in umt5.parameters())
    rows.append({"component": "UMT5-XXL text encoder", "params": n, "dtype": "bf16", "bytes": 2 * n})
    for name, cfg in VAE_CONFIGS.items():
        with torch.device("meta"):
            vae = AutoencoderKLWan(**cfg)
        n = sum(p.numel() for p in vae.parameters())
        rows.append({"component": name, "params": n, "dtype": "fp32", "bytes": 4 * n})
    return rows


def gib(n: int) -> str:
    """Bytes as GiB with two decimals (the unit of every table here)."""
    return f"{n / GIB:,.2f}"


def markdown(counts: list[ModelCounts], acts: list[ActivationEstimate], extra: list[dict]) -> str:
    out = [
        "Parameters and bytes (exact; LoRA r=128 on attn1/attn2 q,k,v,out + ffn, one 4x4x2 encoder 64-128-256-512; "
        "frozen = bf16 except diffusers' fp32 modules; trainable = fp32 weight + grad + 2 AdamW moments; GiB = 2^30)",
        "",
        "| model | frozen DiT params | LoRA params | encoder params | frozen GiB | trainable GiB | total GiB "
        f"| FSDP×{FSDP_GPUS} GiB/GPU | + one gathered block GiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in counts:
        out.append(
            f"| {c.model} | {c.frozen_params:,} | {c.lora_params:,} | {c.encoder_params:,} | {gib(c.frozen_bytes)} "
            f"| {gib(c.trainable_bytes)} | {gib(c.total_bytes)} | {gib(c.fsdp_bytes_per_gpu)} "
            f"| {gib(c.gathered_block_bytes)} |"
        )
    out += [
        "",
        "Activations of one stage-I step (ESTIMATE from a formula, not a measurement): batch 1 per GPU, 480x832, "
        "20-s history, 4x4x2 context, 3 queried latent frames, gradient checkpointing on every DiT block",
        "",
        "| model | fps | history latent T×H×W | context tokens | target tokens | sequence | kept block inputs GiB "
        "| shared inputs GiB | one block recomputed GiB | encoder GiB | activations GiB | DDP GiB/GPU "
        f"| FSDP×{FSDP_GPUS} GiB/GPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c, a in zip(counts, acts, strict=True):
        t, h, w = a.latent_shape
        out.append(
            f"| {a.model} | {a.fps:g} | {t}×{h}×{w} | {a.context_tokens:,} | {a.target_tokens:,} | {a.sequence:,} "
            f"| {gib(a.kept_block_inputs)} | {gib(a.shared_inputs)} | {gib(a.one_block)} | {gib(a.encoder)} "
            f"| {gib(a.total)} | {gib(c.total_bytes + a.total)} "
            f"| {gib(c.fsdp_bytes_per_gpu + c.gathered_block_bytes + a.total)} |"
        )
    out += [
        "",
        "Not loaded when training from a `data prepare` cache (exact parameter counts)",
        "",
        "| component | params | stored as | GiB |",
        "|---|---|---|---|",
    ]
    for row in extra:
        out.append(f"| {row['component']} | {row['params']:,} | {row['dtype']} | {gib(row['bytes'])} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of markdown tables")
    args = parser.parse_args()
    counts, acts = [], []
    for name, config in CONFIGS.items():
        c, transformer, encoder = count_model(name, config)
        geometry, fps = GEOMETRY[name]
        counts.append(c)
        acts.append(activation_estimate(c, config, transformer, encoder, geometry, fps))
    extra = not_loaded_counts()
    if args.json:
        result = {
            "exact": [
                {
                    **asdict(c),
                    "total_bytes": c.total_bytes,
                    f"fsdp{FSDP_GPUS}_bytes_per_gpu": c.fsdp_bytes_per_gpu,
                    "gathered_block_bytes": c.gathered_block_bytes,
                }
                for c in counts
            ],
            "activations_estimate": [{**asdict(a), "total": a.total} for a in acts],
            "not_loaded_when_training_from_cache": extra,
            "notes": {
                "lora": {
                    "rank": LORA_RANK,
                    "alpha": LORA_RANK,
                    "target_modules": LORA_TARGETS,
                    "lora_targets_match_project": getattr(WanBackbone, "lora_targets", None) == LORA_TARGETS,
                },
                "encoder": asdict(ENCODER),
                "activations": "estimate from a formula (see activation_estimate); parameter counts are exact",
            },
        }
        print(json.dumps(result, indent=2))
    else:
        print(markdown(counts, acts, extra))


if __name__ == "__main__":
    main()
