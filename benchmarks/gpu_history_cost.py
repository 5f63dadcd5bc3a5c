"""What a history costs on a real GPU: time and peak memory of Wan 2.2 TI2V-5B generation and of one training step.

    python benchmarks/gpu_history_cost.py --out result.json     # on a CUDA GPU (H100/H200: about 3 of its 7 minutes)
    python benchmarks/gpu_history_cost.py --dry-run              # anywhere: tiny sizes, a few seconds, CPU is fine

How to run it on the project's device machine: benchmarks/gpu_history_cost.md (scripts/device_gpu_history_cost.sh).

Why this exists: ``tinyhistory cost`` counts FLOPs and ``tinyhistory plan`` predicts memory, both on the meta device;
neither says how many seconds a generated second takes or whether the predicted peaks hold. This script measures
both at the paper's setting, once a GPU is lent, and prints each measurement next to the prediction it checks.

What it builds: the Wan 2.2 TI2V-5B DiT from its config (``tinyhistory.sizing.models``) with random weights, stored
as ``from_pretrained(torch_dtype=bfloat16)`` stores them (bf16, diffusers' fp32 modules in fp32), the preset's
history encoder (4×4×2, paper widths, fp32) and, apart, the real-size Wan 2.2 VAE with random fp32 weights. Random
weights change no shape, so time and memory are those of the real model. Stand-ins, on purpose:

* text: UMT5-XXL is skipped — a prompt is encoded once per prompt, not per step; random 512×4096 prompt states;
* history: random latents through the real history encoder give context tokens of the right count and positions;
  the LR latents are random at the encoder's floor shape (the Wan 2.2 VAE cannot encode the 120×208 LR frames that
  4×4×2 gives at 480×832 today, see ``tinyhistory plan``);
* the per-segment incremental encoder append (0.007 TFLOPs) is not timed; the VAE decode of a segment is timed
  apart and added to the seconds per generated second.

Measured:

* generation at 480×832 with 0/20/60/120 s of 4×4×2 history, one 1-s segment (6 latent frames), 30 UniPC steps
  with CFG (``sample_segment``, the session's own sampler), uncached and with the history KV cache
  (``history.kv_cache``), with and without ``--offload`` (``generate.run.offload_blocks``): seconds, seconds per
  generated second, ``torch.cuda.max_memory_allocated`` and the working set above the weights, beside the
  working set ``tinyhistory.sizing.memory`` traces on the meta device. Offloaded runs time 1 and 5 steps and extrapolate
  to 30 (every step moves the same blocks);
* the VAE's streaming decode of one segment (``WanStreamDecoder``): seconds and peak, beside the trace;
* one stage-I training step at 20 s of history (LoRA r128, gradient checkpointing, AdamW, the trainer's
  ``StageLoss``): seconds, peak memory beside ``tinyhistory plan``'s prediction, and MFU = model FLOPs / (seconds ×
  989 TFLOP/s, the dense bf16 peak of an H100 SXM / H200 that NVIDIA states). FLOPs are counted by the counter
  ``tinyhistory.sizing.cost`` uses (``torch.utils.flop_counter.FlopCounterMode``) around a real step: model FLOPs with
  checkpointing off (forward + backward), executed FLOPs with it on (adds the recompute) for the HFU.

Every measurement is time-boxed against ``--budget-s`` (default 420 s, under the device tool's 8 minutes): what
would not fit is skipped and listed under ``skipped``. Results are written to ``--out`` after every measurement, so
a run cut short still leaves what it measured.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import platform
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from tinyhistory.assemble import HistoryDiT
from tinyhistory.backbones.wan import WanBackbone
from tinyhistory.codecs.wan import WanVAECodec
from tinyhistory.config import load_config
from tinyhistory.generate.session import SamplingSettings, sample_segment
from tinyhistory.geometry import BaseGeometry, Rate, context_report
from tinyhistory.sizing.memory import (
    GIB,
    decode_trace,
    dit_step_trace,
    meta_encoder,
    model_counts,
    stage_activations,
)
from tinyhistory.sizing.memory import build_backbone as meta_backbone
from tinyhistory.sizing.models import get_config
from tinyhistory.text.condition import TextCondition

PEAK_FLOPS = 989e12  # dense bf16 tensor-core peak of an H100 SXM and of an H200 (NVIDIA's data sheets), FLOP/s
MODEL = "Wan2.2-TI2V-5B"
PRESET = "wan2.2-ti2v-5b"

# The real run: the paper's setting. The dry run: the same code on a model small enough for a CPU test.
REAL = dict(height=480, width=832, histories=(0.0, 20.0, 60.0, 120.0), steps=30, train_history=20.0, text_tokens=512)
DRY = dict(height=128, width=128, histories=(0.0, 2.0), steps=2, train_history=2.0, text_tokens=8)
TINY_DIT = {"num_attention_heads": 2, "attention_head_dim": 16, "ffn_dim": 64, "num_layers": 2, "text_dim": 32}
TINY_VAE = dict(  # tests/tiny_vaes.py's Wan 2.2-shaped VAE
    base_dim=3,
    z_dim=48,
    in_channels=12,
    out_channels=12,
    is_residual=True,
    patch_size=2,
    dim_mult=[1, 1, 1, 1],
    num_res_blocks=1,
    scale_factor_spatial=16,
    scale_factor_temporal=4,
    temperal_downsample=[False, True, True],
)
TINY_HISTORY = ["history.channels=[8, 16, 32, 32]", "history.attention_heads=2"]
GUIDANCE, FLOW_SHIFT, LORA_RANK, QUERIES, TIMED_TRAIN_STEPS = 5.0, 5.0, 128, 3, 3


class Run:
    """The summary being built: results, skipped items, the deadline, and the file rewritten after each result."""

    def __init__(self, args: argparse.Namespace, device: torch.device):
        self.started = time.perf_counter()
        self.budget = args.budget_s
        self.out = Path(args.out) if args.out else None
        self.device = device
        self.summary: dict = {
            "script": "benchmarks/gpu_history_cost.py",
            "dry_run": args.dry_run,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "versions": _versions(),
            "model": f"{MODEL} architecture, random weights (bf16 DiT, fp32 encoder and VAE)"
            + (" at tiny test sizes" if args.dry_run else ""),
            "peak_flops": PEAK_FLOPS,
            "peak_flops_note": "dense bf16 peak of an H100 SXM / H200 (989 TFLOP/s); MFU and HFU divide by it",
            "stand_ins": {
                "text_encoder": "skipped: random prompt states (UMT5 encodes once per prompt, not per step)",
                "history": "random latents through the real 4x4x2 history encoder; LR latents random at floor shape",
                "vae": "real-size Wan 2.2 VAE with random fp32 weights, timed apart (one segment's streamed decode)",
            },
            "generation": [],
            "vae_decode": None,
            "train": None,
            "skipped": [],
        }

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.started)

    def allow(self, what: str, needs_s: float) -> bool:
        """Whether ``what`` (expected to take about ``needs_s``) still fits the budget; records it if not."""
        if self.left() >= needs_s:
            return True
        self.skip(what, f"time: {self.left():.0f} s of the budget left, about {needs_s:.0f} s needed")
        return False

    def skip(self, what: str, why: str) -> None:
        self.summary["skipped"].append({"what": what, "why": why})
        print(f"[skip] {what}: {why}", file=sys.stderr)
        self.save()

    def save(self) -> None:
        self.summary["elapsed_s"] = round(time.perf_counter() - self.started, 2)
        if self.out is not None:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.out.write_text(json.dumps(self.summary, indent=2) + "\n")


def _versions() -> dict:
    out = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("diffusers", "peft", "transformers", "accelerate"):
        try:
            out[name] = __import__(name).__version__
        except Exception as exc:  # a missing package is what the record must show, not a crash
            out[name] = f"unavailable ({exc.__class__.__name__})"
    if torch.cuda.is_available():
        out["cuda"] = torch.version.cuda
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[dict]:
    """``{"baseline", "peak"}`` allocated bytes around the block (None on a CPU, which keeps no such count)."""
    stats: dict = {"baseline": None, "peak": None}
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        stats["baseline"] = torch.cuda.memory_allocated(device)
    yield stats
    if device.type == "cuda":
        sync(device)
        stats["peak"] = torch.cuda.max_memory_allocated(device)


def gib(n: int | None) -> float | None:
    return None if n is None else round(n / GIB, 3)


def timed(device: torch.device, fn: Callable[[], object]) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


# -- models ----------------------------------------------------------------------------------------------------
def dit_config(dry: bool) -> dict:
    config = get_config(MODEL)
    return {**config, **TINY_DIT} if dry else dict(config)


def vae_config(dry: bool) -> dict:
    return TINY_VAE if dry else WanVAECodec.released["wan2.2-ti2v-5b"]


def run_config(dry: bool, stage: str = "frame-query"):
    return load_config(PRESET, overrides=[f'train.stage="{stage}"', *(TINY_HISTORY if dry else [])])


def build_backbone(config: dict, device: torch.device) -> WanBackbone:
    """The DiT with random weights on ``device``, stored as ``from_pretrained(torch_dtype=bfloat16)`` stores it."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    with torch.device(device):
        transformer = WanTransformer3DModel.from_config(config)
    keep = transformer._keep_in_fp32_modules or []
    for name, parameter in transformer.named_parameters():
        if not any(k in name.split(".") for k in keep):
            parameter.data = parameter.data.to(torch.bfloat16)
    transformer.requires_grad_(False).eval()
    return WanBackbone(transformer)


def build_model(dry: bool, device: torch.device) -> HistoryDiT:
    model = HistoryDiT.from_config(run_config(dry), build_backbone(dit_config(dry), device))
    model.producers.to(device)
    return model.eval()


def geometry(config: dict, vae: dict) -> BaseGeometry:
    return BaseGeometry(
        name=MODEL,
        vae_spatial=vae["scale_factor_spatial"],
        vae_temporal=vae["scale_factor_temporal"],
        patch=tuple(config["patch_size"]),
        latent_channels=config["in_channels"],
        hidden_dim=config["num_attention_heads"] * config["attention_head_dim"],
    )


# -- generation ------------------------------------------------------------------------------------------------
def history_context(model: HistoryDiT, base: BaseGeometry, fps: float, seconds: float, h: int, w: int, device):
    """Context tokens for ``seconds`` of history: random latents through the model's own encoder (no grad)."""
    frames = base.latent_frames(int(round(fps * seconds)))
    if frames == 0:
        return None, 0
    rate = model.producers[0].rate
    hr = torch.randn(1, base.latent_channels, frames, h, w, device=device)
    lr = torch.randn(1, base.latent_channels, frames // rate.t, h // rate.h, w // rate.w, device=device)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
        context = model.encode_history(hr, [lr])
    return context, frames


def segment(model, context, frames: int, steps: int, segment_frames: int, h: int, w: int, text_tokens: int, device):
    """One segment: ``sample_segment`` with CFG and UniPC, as ``GenerationSession.generate_segment`` runs it."""
    c = model.backbone.in_channels
    text_dim = model.backbone.transformer.config.text_dim
    noise = torch.randn(1, c, segment_frames, h, w, device=device)
    text = TextCondition(torch.randn(1, text_tokens, text_dim, device=device))
    empty = TextCondition(torch.zeros(1, text_tokens, text_dim, device=device))
    positions = torch.arange(frames, frames + segment_frames, device=device)[None]
    settings = SamplingSettings(
        sampler="unipc", steps=steps, guidance=GUIDANCE, segment_frames=segment_frames, flow_shift=FLOW_SHIFT
    )
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
        return sample_segment(model, noise, text, context, positions, settings, empty)


def set_kv_cache(model: HistoryDiT, on: bool) -> None:
    """Switch the history KV cache (``history.kv_cache``) on or back to diffusers' own attention processor."""
    if on:
        model.backbone.use_kv_cache()
        return
    from diffusers.models.transformers.transformer_wan import WanAttnProcessor

    for block in model.backbone.blocks:
        block.attn1.set_processor(WanAttnProcessor())
    model.backbone.kv_cache = False


def generation_runs(run: Run, args, model: HistoryDiT, offload: bool, p: dict) -> None:
    """Uncached and cached segments at every history length (offloaded: 1 and 5 steps, extrapolated to 30)."""
    dry, device = args.dry_run, run.device
    cfg = run_config(dry, "ar")
    fps, n = cfg.data.fps, cfg.train.segment_frames
    config, vae = dit_config(dry), vae_config(dry)
    base = geometry(config, vae)
    h, w = p["height"] // base.vae_spatial, p["width"] // base.vae_spatial
    seconds_per_segment = n * base.vae_temporal / fps
    orders = (True, False) if offload else (False, True)  # offload: the cheap cached runs first
    for kv in orders:
        set_kv_cache(model, kv)
        warm = False
        for seconds in p["histories"]:
            what = f"generation {seconds:g} s history, kv_cache={kv}, offload={offload}"
            if kv and seconds == 0:
                continue  # no history: nothing to cache, the same step as uncached
            if not run.allow(what, p["needs_gen_s"] * (3 if offload else 1)):
                continue
            try:
                context, frames = history_context(model, base, fps, seconds, h, w, device)
                k = context.num_tokens if context is not None else 0
                if not warm:  # kernels, cuBLAS handles, the scheduler: once per attention mode
                    segment(model, context, frames, 1, n, h, w, p["text_tokens"], device)
                    warm = True

                def go(steps: int, context=context, frames=frames) -> None:
                    segment(model, context, frames, steps, n, h, w, p["text_tokens"], device)

                with peak_memory(device) as mem:
                    if offload:
                        one, five = timed(device, lambda: go(1)), timed(device, lambda: go(5))
                        per_step = (five - one) / 4
                        elapsed = (one - per_step) + p["steps"] * per_step
                        steps_run = "1 and 5 (extrapolated)"
                    else:
                        elapsed = timed(device, lambda: go(p["steps"]))
                        steps_run = p["steps"]
                trace = dit_step_trace(WanBackbone, config, k, (base.latent_channels, n, h, w), kv, 2, p["text_tokens"])
                predicted = trace.working + trace.kv_cache
                if offload:  # the block visiting the GPU counts as working memory here: its weights come and go
                    predicted += sum(q.numel() * q.element_size() for q in model.backbone.blocks[0].parameters())
                working = mem["peak"] - mem["baseline"] if mem["peak"] is not None else None
                row = {
                    "history_s": seconds,
                    "kv_cache": kv,
                    "offload": offload,
                    "context_tokens": k,
                    "steps": p["steps"],
                    "steps_run": steps_run,
                    "segment_s": round(elapsed, 3),
                    "dit_s_per_generated_s": round(elapsed / seconds_per_segment, 3),
                    "peak_allocated_gib": gib(mem["peak"]),
                    "baseline_allocated_gib": gib(mem["baseline"]),
                    "working_gib": gib(working),
                    "predicted_working_gib": gib(predicted),
                    "working_over_predicted": round(working / predicted, 3) if working and predicted else None,
                }
                run.summary["generation"].append(row)
                print(f"[gen] {json.dumps(row)}", file=sys.stderr)
                context = None  # free the history's tokens before the next length is encoded
            except RuntimeError as exc:  # out of memory and the like: record, free, go on
                run.skip(what, f"error: {str(exc).splitlines()[0][:200]}")
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            run.save()


# -- the VAE ---------------------------------------------------------------------------------------------------
def vae_run(run: Run, args, p: dict) -> None:
    if not run.allow("VAE decode of one segment", 30 if not args.dry_run else 1):
        return
    from diffusers import AutoencoderKLWan

    from tinyhistory.codecs.wan import WanVAECodec

    device, cfg = run.device, vae_config(args.dry_run)
    z = cfg["z_dim"]
    torch.manual_seed(0)
    with torch.device(device):
        vae = AutoencoderKLWan.from_config({**cfg, "latents_mean": [0.0] * z, "latents_std": [1.0] * z}).eval()
    codec = WanVAECodec(vae)
    n = run_config(args.dry_run, "ar").train.segment_frames
    s = codec.spatial_factor
    latents = torch.randn(1, z, n, p["height"] // s, p["width"] // s, device=device)
    decoder = codec.stream_decoder()
    with peak_memory(device) as mem:
        first = timed(device, lambda: decoder.push(latents[:, :, :1]))
        later = timed(device, lambda: decoder.push(latents))
    trace = decode_trace(WanVAECodec, cfg, n, p["height"], p["width"])
    predicted = trace.working + trace.cache
    used = mem["peak"] - mem["baseline"] if mem["peak"] is not None else None
    run.summary["vae_decode"] = {
        "segment_latent_frames": n,
        "first_push_s": round(first, 3),
        "segment_s": round(later, 3),
        "weights_gib": gib(sum(q.numel() * q.element_size() for q in vae.parameters())),
        "peak_allocated_gib": gib(mem["peak"]),
        "decode_gib": gib(used),
        "predicted_decode_gib": gib(predicted),
        "decode_over_predicted": round(used / predicted, 3) if used else None,
    }
    print(f"[vae] {json.dumps(run.summary['vae_decode'])}", file=sys.stderr)
    run.save()


# -- training --------------------------------------------------------------------------------------------------
def predicted_train_bytes(dry: bool, p: dict) -> int:
    """``tinyhistory plan``'s stage-I GPU peak for this setting (exact state + the activation formula)."""
    cfg, config = run_config(dry), dit_config(dry)
    h = cfg.history
    from tinyhistory.history import EncoderConfig

    backbone = meta_backbone(WanBackbone, config, LORA_RANK)
    encoder = meta_encoder(
        EncoderConfig(h.rates[0], h.method, tuple(h.channels), h.attention_blocks, h.attention_heads), backbone
    )
    counts = model_counts(MODEL, backbone, [encoder])
    base = geometry(config, vae_config(dry))
    rate = Rate.parse(h.rates[0])
    tokens = context_report(base, p["height"], p["width"], cfg.data.fps, p["train_history"], [rate]).history_tokens
    act = stage_activations(
        backbone,
        config,
        [encoder],
        base,
        p["height"],
        p["width"],
        cfg.data.fps,
        p["train_history"],
        tokens,
        QUERIES,
        LORA_RANK,
        p["text_tokens"],
        MODEL,
    )
    return counts.total_bytes + act.total


def train_run(run: Run, args, p: dict) -> None:
    if not run.allow("stage-I training step", 60 if not args.dry_run else 1):
        return
    from tinyhistory.train.lora import add_lora
    from tinyhistory.train.objectives import make_frame_query_batch
    from tinyhistory.train.trainer import StageLoss, _to

    dry, device = args.dry_run, run.device
    cfg = run_config(dry)
    config, vae = dit_config(dry), vae_config(dry)
    base = geometry(config, vae)
    backbone = build_backbone(config, device)
    add_lora(backbone, LORA_RANK)  # the trainer's LoRA: r = α = 128, fp32, every block's attention and FFN
    model = HistoryDiT.from_config(cfg, backbone)
    model.producers.to(device)
    model.train()
    backbone.enable_gradient_checkpointing()
    trainable = [q for q in model.parameters() if q.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, weight_decay=cfg.train.weight_decay, betas=(0.9, 0.99))
    loss_fn = StageLoss(cfg.train, cfg.model.dtype, model)
    frames = base.latent_frames(int(round(cfg.data.fps * p["train_history"])))
    h, w = p["height"] // base.vae_spatial, p["width"] // base.vae_spatial
    rate = model.producers[0].rate
    generator = torch.Generator().manual_seed(0)
    hr = torch.randn(1, base.latent_channels, frames, h, w, generator=generator)
    lr = torch.randn(1, base.latent_channels, frames // rate.t, h // rate.h, w // rate.w, generator=generator)
    tc = cfg.train
    batch = make_frame_query_batch(
        hr, [lr], [rate], tc.query_window, tc.mask_low, tc.timestep_shift, generator, QUERIES
    )
    batch = _to(batch, device)
    text = TextCondition(torch.randn(1, p["text_tokens"], config["text_dim"], device=device))

    def forward_backward() -> None:
        loss = loss_fn(batch, text)
        loss.backward()

    def step() -> None:
        forward_backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up: kernels, and AdamW's moments exist from here on, as in every later step
    with FlopCounterMode(display=False) as executed:
        forward_backward()
    optimizer.zero_grad(set_to_none=True)
    backbone.transformer.disable_gradient_checkpointing()
    with FlopCounterMode(display=False) as model_flops:
        forward_backward()
    optimizer.zero_grad(set_to_none=True)
    backbone.enable_gradient_checkpointing()
    with peak_memory(device) as mem:
        seconds = timed(device, lambda: [step() for _ in range(TIMED_TRAIN_STEPS)]) / TIMED_TRAIN_STEPS
    flops, executed_flops = model_flops.get_total_flops(), executed.get_total_flops()
    predicted = predicted_train_bytes(dry, p)
    run.summary["train"] = {
        "stage": "frame-query",
        "history_s": p["train_history"],
        "history_latent_frames": frames,
        "queried_latent_frames": QUERIES,
        "lora_rank": LORA_RANK,
        "gradient_checkpointing": True,
        "trainable_params": sum(q.numel() for q in trainable),
        "step_s": round(seconds, 4),
        "model_tflops_per_step": round(flops / 1e12, 3),
        "executed_tflops_per_step": round(executed_flops / 1e12, 3),
        "mfu": round(flops / (seconds * PEAK_FLOPS), 4),
        "hfu": round(executed_flops / (seconds * PEAK_FLOPS), 4),
        "peak_allocated_gib": gib(mem["peak"]),
        "predicted_peak_gib": gib(predicted),
        "peak_over_predicted": round(mem["peak"] / predicted, 3) if mem["peak"] else None,
    }
    print(f"[train] {json.dumps(run.summary['train'])}", file=sys.stderr)
    run.save()


# -- main ------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes, any device (the test runs this)")
    parser.add_argument("--budget-s", type=float, default=420.0, help="stop starting measurements after this")
    parser.add_argument("--out", default=None, help="JSON file rewritten after every measurement")
    parser.add_argument("--skip-offload", action="store_true", help="leave out the --offload runs")
    args = parser.parse_args(argv)
    if not math.isfinite(args.budget_s) or args.budget_s <= 0:
        parser.error("--budget-s must be positive")
    cuda = torch.cuda.is_available()
    if not cuda and not args.dry_run:
        print("gpu_history_cost: no CUDA device; run with --dry-run on a CPU", file=sys.stderr)
        return 2
    device = torch.device("cuda" if cuda else "cpu")
    p = dict(DRY if args.dry_run else REAL)
    p["needs_gen_s"] = 1.0 if args.dry_run else 20.0
    run = Run(args, device)
    run.summary["settings"] = {k: v for k, v in p.items() if k != "needs_gen_s"} | {
        "rate": "4x4x2",
        "guidance": GUIDANCE,
        "sampler": "unipc",
        "flow_shift": FLOW_SHIFT,
    }
    torch.manual_seed(0)

    model = build_model(args.dry_run, device)
    generation_runs(run, args, model, offload=False, p=p)
    del model
    if cuda:
        torch.cuda.empty_cache()
    vae_run(run, args, p)
    if cuda:
        torch.cuda.empty_cache()
    train_run(run, args, p)
    if cuda:
        torch.cuda.empty_cache()
    if args.skip_offload:
        run.skip("generation with --offload", "--skip-offload")
    elif not cuda:
        run.skip("generation with --offload", "needs CUDA (diffusers group offload moves blocks to a CUDA device)")
    elif run.allow("generation with --offload", 3 * p["needs_gen_s"]):
        from tinyhistory.generate.run import offload_blocks

        model = build_model(args.dry_run, device)
        offload_blocks(model.backbone, device)
        generation_runs(run, args, model, offload=True, p=p)
        del model
    run.save()
    print(json.dumps(run.summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
