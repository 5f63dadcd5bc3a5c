"""What trains and what stays frozen when the history encoder + LoRA are trained on a real Wan DiT, and what it costs.

    python benchmarks/memory_estimate.py            # markdown tables; results are recorded in BENCHMARKS.md
    python benchmarks/memory_estimate.py --json     # the same numbers as JSON

Why this exists: the tiny preset trains on a laptop CPU, the paper's setting does not, and before renting GPUs one
wants to know whether a 14B DiT + LoRA + history encoder fits per GPU (plain DDP) or needs FSDP
(``configs/accelerate/fsdp.yaml``). Nothing here downloads weights: every model is built on the ``meta`` device from
the released configs every family declares (read by ``tinyhistory.sizing.models``), so the counts are exact
and cost no memory. ``tinyhistory plan`` puts the same numbers together for one model, card and RAM size.

Two kinds of numbers, kept apart on purpose:

* **exact**: parameter counts (frozen DiT, LoRA, history encoder, UMT5-XXL, VAE) and the bytes they imply for a
  given storage rule (frozen weights as ``from_pretrained(torch_dtype=bfloat16)`` stores them, i.e. bf16 except
  diffusers' ``_keep_in_fp32_modules``; trainable weights fp32 + fp32 grads + AdamW's two fp32 moments);
* **estimated (a formula)**: activation memory of one stage-I step with gradient checkpointing. See
  :func:`tinyhistory.sizing.memory.stage_activations` for every term; it is no measurement, which needs the GPU machine.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

import torch

from tinyhistory.config import load_config
from tinyhistory.geometry import get_base
from tinyhistory.history import HistoryEncoder
from tinyhistory.sizing.memory import (
    ENCODER,
    GIB,
    LORA_RANK,
    ActivationEstimate,
    ModelCounts,
    count_model,
    stage_activations,
)
from tinyhistory.sizing.models import Released, component_params, released_presets

FSDP_GPUS = 8
HEIGHT, WIDTH, HISTORY_SECONDS, TARGET_LATENT_FRAMES = 480, 832, 20.0, 3

# --- the released models every family declares (tinyhistory.sizing.models reads them: the cost model, ``tinyhistory
# cost``, builds the same DiTs); the counting code and the activation model live in tinyhistory.sizing.memory
# (``tinyhistory plan`` uses them too).


def activation_estimate(
    counts: ModelCounts, model: Released, backbone: torch.nn.Module, encoder: HistoryEncoder, preset: str
) -> ActivationEstimate:
    """Stage-I activations at 480×832, a 20-s history at the preset's fps, 4×4×2 context and 3 queried latent frames.

    The model and every one of its terms: :func:`tinyhistory.sizing.memory.stage_activations` (shared with
    ``tinyhistory plan``). Not counted: transient gradient buffers of the block being back-propagated, allocator
    fragmentation, the loss.
    """
    cfg = load_config(preset)
    base = get_base(cfg.base)
    if (base.hidden_dim, base.latent_channels) != (counts.hidden_dim, counts.latent_channels):
        raise RuntimeError(f"tinyhistory.geometry {cfg.base!r} disagrees with {counts.model}'s config")
    grid = base.token_grid(HEIGHT, WIDTH, int(round(cfg.data.fps * HISTORY_SECONDS)))
    tokens = (grid[0] // encoder.rate.t) * (grid[1] // encoder.rate.h) * (grid[2] // encoder.rate.w)
    return stage_activations(
        backbone,
        model.dit.config,
        [encoder],
        base,
        HEIGHT,
        WIDTH,
        cfg.data.fps,
        HISTORY_SECONDS,
        tokens,
        TARGET_LATENT_FRAMES,
        LORA_RANK,
        cfg.text.max_tokens,
        counts.model,
    )


def not_loaded_counts(models: dict[str, Released]) -> list[dict]:
    """Text encoders and VAEs: only needed to build the cache (``tinyhistory data prepare``), not to train from it."""
    rows, seen = [], set()
    for model in models.values():
        for component, config in model.text.released.items():
            name = f"{model.text.sizing_name} text encoder ({component})"
            if name not in seen:
                seen.add(name)
                n = component_params(model.text, component, config)
                rows.append({"component": name, "params": n, "dtype": "bf16", "bytes": 2 * n})
        name = f"VAE of {model.name}"
        n = sum(p.numel() for p in model.codec.meta(model.vae).vae.parameters())
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
        "Activations of one stage-I step (ESTIMATE from a formula or a meta-device trace, not a measurement): "
        "batch 1 per GPU, 480x832, "
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
    models = released_presets()
    for preset, model in models.items():
        c, backbone, encoder = count_model(model.adapter, model.name, model.dit.config)
        counts.append(c)
        acts.append(activation_estimate(c, model, backbone, encoder, preset))
    extra = not_loaded_counts(models)
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
                    "target_modules": {m.name: m.adapter.lora_targets for m in models.values()},
                },
                "encoder": asdict(ENCODER),
                "activations": "estimate: the family's formula or a trace (see activation_estimate); counts are exact",
            },
        }
        print(json.dumps(result, indent=2))
    else:
        print(markdown(counts, acts, extra))


if __name__ == "__main__":
    main()
