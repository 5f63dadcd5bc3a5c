"""What trains and what stays frozen when the history encoder + LoRA are trained on a real Wan DiT, and what it costs.

    python benchmarks/memory_estimate.py            # markdown tables; results are recorded in BENCHMARKS.md
    python benchmarks/memory_estimate.py --json     # the same numbers as JSON

Why this exists: the tiny preset trains on a laptop CPU, the paper's setting does not, and before renting GPUs one
wants to know whether a 14B DiT + LoRA + history encoder fits per GPU (plain DDP) or needs FSDP
(``configs/accelerate/fsdp.yaml``). Nothing here downloads weights: every model is built on the ``meta`` device from
the diffusers configs embedded in ``tinyhistory.model_configs`` and ``tinyhistory.memory``, so the counts are exact
and cost no memory. ``tinyhistory plan`` puts the same numbers together for one model, card and RAM size.

Two kinds of numbers, kept apart on purpose:

* **exact**: parameter counts (frozen DiT, LoRA, history encoder, UMT5-XXL, VAE) and the bytes they imply for a
  given storage rule (frozen weights as ``from_pretrained(torch_dtype=bfloat16)`` stores them, i.e. bf16 except
  diffusers' ``_keep_in_fp32_modules``; trainable weights fp32 + fp32 grads + AdamW's two fp32 moments);
* **estimated (a formula)**: activation memory of one stage-I step with gradient checkpointing. See
  :func:`tinyhistory.memory.stage_activations` for every term; it is no measurement, which needs the GPU machine.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

import torch
from diffusers import AutoencoderKLWan
from transformers import UMT5Config, UMT5EncoderModel

from tinyhistory.backbones.wan import WanBackbone
from tinyhistory.geometry import Rate, get_base
from tinyhistory.history import HistoryEncoder
from tinyhistory.memory import (
    ENCODER,
    GIB,
    LORA_RANK,
    LORA_TARGETS,
    UMT5_XXL,
    VAE_CONFIGS,
    ActivationEstimate,
    ModelCounts,
    count_model,
    stage_activations,
)
from tinyhistory.model_configs import CONFIGS, GEOMETRY

FSDP_GPUS = 8
HEIGHT, WIDTH, HISTORY_SECONDS, TARGET_LATENT_FRAMES, TEXT_TOKENS = 480, 832, 20.0, 3, 512

# --- transformer/config.json of each model, and its geometry: embedded once in tinyhistory.model_configs (the cost
# model, ``tinyhistory cost``, builds the same DiTs); see that module for where every value comes from. The counting
# code, the UMT5-XXL and VAE configs and the activation formula live in tinyhistory.memory (``tinyhistory plan``
# uses them too).


def activation_estimate(
    counts: ModelCounts,
    config: dict,
    transformer: torch.nn.Module,
    encoder: HistoryEncoder,
    geometry: str,
    fps: float,
) -> ActivationEstimate:
    """Stage-I activations at 480×832, a 20-s history at ``fps``, 4×4×2 context and 3 queried latent frames.

    The formula and every one of its terms: :func:`tinyhistory.memory.stage_activations` (shared with
    ``tinyhistory plan``). Not counted: transient gradient buffers of the block being back-propagated, allocator
    fragmentation, the loss.
    """
    base = get_base(geometry)
    if (base.hidden_dim, base.latent_channels) != (counts.hidden_dim, counts.latent_channels):
        raise RuntimeError(f"tinyhistory.geometry {geometry!r} disagrees with {counts.model}'s config")
    return stage_activations(
        counts,
        config["attention_head_dim"],
        encoder,
        transformer.patch_embedding,
        base,
        HEIGHT,
        WIDTH,
        fps,
        HISTORY_SECONDS,
        Rate.parse(ENCODER.rate),
        TARGET_LATENT_FRAMES,
        LORA_RANK,
        TEXT_TOKENS,
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
            f"| {gib(c.trainable_bytes)} | {gib(c.total_bytes)} | {gib(c.sharded_bytes(FSDP_GPUS))} "
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
            f"| {gib(c.sharded_bytes(FSDP_GPUS) + c.gathered_block_bytes + a.total)} |"
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
                    f"fsdp{FSDP_GPUS}_bytes_per_gpu": c.sharded_bytes(FSDP_GPUS),
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
