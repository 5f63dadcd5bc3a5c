"""The embedded end-to-end demo (``make demo`` → ``tinyhistory demo --out DIR``), on the ``miniature`` preset.

0. ``data prepare`` the demo footage into ``DIR/cache`` (latent windows of the learned codec + text embeddings);
   every training below reads that cache, as a user's run does.
1. Load the three committed stage-I checkpoints (proposed 4×4×2, Large Patchifier 4×4×2, no history): a LoRA and a
   history producer each, on the same frozen pretrained base, trained for the same number of steps with the same
   protocol (:data:`STAGE1_PROTOCOL`) by ``scripts/train_miniature.sh`` (``--from-scratch`` retrains everything
   instead: the codec, the base, the rows).
2. Evaluate frame-query reconstruction on the held-out last 20 % of the footage (never trained on), with the history
   length the rows were trained on, beside trivial references and the codec's own reconstruction (the ceiling)
   computed on the same frames.
3. Run a short live stage-I fine-tune of the proposed model with a progress bar (the training path, working).

Writes ``DIR/results.json``, ``DIR/results.md`` and ``DIR/frame_query.png``.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from tinyhistory.codecs.learned_train import CodecTrainSettings, train_codec
from tinyhistory.config import RunConfig, apply_overrides, load_config
from tinyhistory.data.prepare import run_prepare
from tinyhistory.data.windows import clip_from_config, to_uint8
from tinyhistory.eval.figures import grid_image
from tinyhistory.eval.frame_query import (
    context_size,
    eval_set_for_clip,
    evaluate_method,
    queried_pixels,
    reference_metrics,
)
from tinyhistory.eval.lpips import LPIPS
from tinyhistory.paths import PROJECT_ROOT, resolve_path
from tinyhistory.reproduce.demo_stage2 import markdown as stage2_markdown
from tinyhistory.reproduce.demo_stage2 import run_stage2, stage2_folders
from tinyhistory.text.cache import encode_prompts
from tinyhistory.train.checkpoint import load_model, read_config, trained_steps
from tinyhistory.train.trainer import train

METHODS = ("proposed", "large_patchifier", "no_history")
LABELS = {"proposed": "Proposed 4x4x2", "large_patchifier": "Large Patchifier 4x4x2", "no_history": "No history"}
DEMO_PRESET = "miniature"
DEFAULT_CHECKPOINTS = PROJECT_ROOT / "checkpoints" / DEMO_PRESET
# ``--from-scratch`` for a preset with a learned codec and a frozen pretrained base (scripts/train_miniature.sh):
CODEC_STEPS = 4000  # `tinyhistory codec train`, batch 16, L1 + 0.5·LPIPS
BASE_PRETRAINING = [  # `tinyhistory train --stage ar`: the whole DiT as a text-to-video model, no history
    'train.stage="ar"',
    'model.path=""',
    'train.dit="full"',
    'history.method="no_history"',
    "train.lora_rank=0",
    "train.learning_rate=3e-4",
    "train.history_frames=16",
    "train.batch_size=8",
    "train.steps=6000",
]
# The rows' stage-I protocol (issue 22's search, docs/results/miniature_demo/search/readout/): Wan's training time
# shift 5 (the history is read at high noise, which shift 1 trains least), 16-frame histories, 2,000 steps, and for the
# rows with a context the phase readout r16 (a per-cell linear map of what a target token reads from a history token).
STAGE1_PROTOCOL = ["train.timestep_shift=5.0", "train.history_frames=16", "train.steps=2000"]
STAGE1_READOUT = ["history.phase_readout=16"]  # not for no_history: it has no context to read
EVAL_WINDOWS = 24
EVAL_QUERIES = 2


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _markdown(results: dict) -> str:
    lines = [
        f"# Frame-query reconstruction on held-out frames ({results['preset']} preset)",
        "",
        f"{results['protocol']}",
        "",
        "| method | steps | context tokens | held-out loss ↓ | PSNR ↑ | SSIM ↑ | LPIPS ↓ | PSNR one-step ↑ |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method in METHODS:
        m = results["methods"].get(method)
        if m:
            lines.append(
                f"| {LABELS[method]} | {m['steps']} | {m['context_tokens']} | {m['heldout_loss']:.4f} | "
                f"{m['psnr']:.2f} | {m['ssim']:.3f} | {_fmt(m.get('lpips'))} | {m['psnr_one_step']:.2f} |"
            )
    lines += ["", "| reference (same frames) | PSNR | SSIM |", "|---|---|---|"]
    for name, ref in results["references"].items():
        lines.append(f"| {name} | {ref['psnr']:.2f} | {ref['ssim']:.3f} |")
    if "finetune" in results:
        f = results["finetune"]
        lines += [
            "",
            f"Live fine-tune of the proposed model (from {f['cache']} `data prepare` cache): "
            f"{f['steps']} steps in {f['seconds']:.1f} s, "
            f"held-out loss {f['heldout_loss_before']:.4f} → {f['heldout_loss_after']:.4f}.",
        ]
    if "stage2" in results:
        lines += stage2_markdown(results["stage2"])
    return "\n".join(lines) + "\n"


def prepare_demo_cache(cfg: RunConfig, cache: Path) -> Path:
    """`tinyhistory data prepare` on the demo clip: the demo trains from latent caches, as a user's run does.

    A second run finds the shard already made (keyed by the clip's hash and the config) and only rebuilds the manifest.
    """
    print(f"[demo] data prepare: caching the demo clip's latents in {cache}")
    if run_prepare(cfg, resolve_path(cfg.data.video), cache) != 0:
        raise RuntimeError(f"data prepare could not cache the demo clip; see {cache / 'report.json'}")
    return cache


def train_foundations(preset: str, out: Path, sets: list[str], codec_steps: int = CODEC_STEPS) -> list[str]:
    """What ``--from-scratch`` trains before the Table-1 rows: the preset's learned codec and its pretrained base
    (the miniature's steps 1–3 of ``scripts/train_miniature.sh``, with the same settings); returns ``sets`` (the
    caller's overrides) plus the overrides that point the rest of the demo at them. A preset with a fixed codec and a
    whole DiT training (``tiny``) needs neither."""
    cfg = load_config(preset, overrides=sets)
    overrides = list(sets)
    if cfg.codec.kind == "learned":
        settings = CodecTrainSettings(
            video=str(resolve_path(cfg.data.video)),
            out=str(out / "codec"),
            fps=cfg.data.fps,
            size=cfg.data.size,
            heldout_fraction=cfg.data.heldout_fraction,
            steps=codec_steps,
        )
        print(f"[demo] training the {preset} codec for {settings.steps} steps")
        train_codec(settings, progress=False)
        overrides.append(f'codec.path="{out / "codec"}"')
    if cfg.train.dit == "lora" and not cfg.model.path:
        base_overrides = [*overrides, *BASE_PRETRAINING, *sets, f'data.cache="{out / "cache"}"']
        prepare_demo_cache(load_config(preset, overrides=overrides), out / "cache")
        base_cfg = load_config(preset, overrides=base_overrides)
        print(f"[demo] pretraining the {preset} base (text-to-video, no history) for {base_cfg.train.steps} steps")
        train(base_cfg, out / "base")
        overrides.append(f'model.path="{out / "base" / "final"}"')
    return overrides


def run_demo(
    out: Path,
    from_scratch: bool = False,
    checkpoints: str | Path | None = None,
    finetune_steps: int = 40,
    stage2: bool = True,
    sample_steps: int = 20,
    cache: str | Path | None = None,
    preset: str = DEMO_PRESET,
    overrides: list[str] = (),
    codec_steps: int = CODEC_STEPS,
) -> dict:
    """Run the demo into ``out``; ``cache``: train from this `data prepare` cache (e.g. of your own videos) instead
    of caching the demo clip. Evaluation always uses the demo clip's held-out part. ``preset``: the preset the
    checkpoints were trained with (its footage, codec and caption); ``overrides``: ``section.key=value`` on every
    config the demo loads (sizes for tests); ``codec_steps``: the learned codec's steps with ``from_scratch``."""
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    torch.manual_seed(0)
    ckpt_root = Path(checkpoints) if checkpoints else DEFAULT_CHECKPOINTS
    if not from_scratch:  # before the minute of caching the clip, not after it
        for method in METHODS:
            if not (ckpt_root / method / "config.json").is_file():
                raise FileNotFoundError(
                    f"no committed checkpoint for {method!r} in {ckpt_root / method}; "
                    "run `tinyhistory demo --from-scratch` or scripts/train_miniature.sh"
                )
    # the overrides on every config the demo loads (with --from-scratch: naming the codec and base it trained)
    common = train_foundations(preset, out, list(overrides), codec_steps) if from_scratch else list(overrides)
    base_cfg = load_config(preset, overrides=common)

    own_cache = cache is None
    cache = prepare_demo_cache(base_cfg, out / "cache") if own_cache else Path(cache).resolve()
    folders: dict[str, Path] = {}
    for method in METHODS:
        if from_scratch:
            readout = [] if method == "no_history" else STAGE1_READOUT
            sets = [*STAGE1_PROTOCOL, *readout, *common, f'history.method="{method}"', f'data.cache="{cache}"']
            cfg = load_config(preset, overrides=sets)
            print(f"[demo] training {method} from scratch for {cfg.train.steps} steps")
            train(cfg, out / "train" / method)
            folders[method] = out / "train" / method / "final"
        else:
            folders[method] = ckpt_root / method

    print("[demo] loading the held-out part of the demo clip and the text encoder")
    clip = clip_from_config(base_cfg.data)
    text = encode_prompts(base_cfg.text, [base_cfg.text.caption])
    rows_cfg = read_config(folders["proposed"])  # the protocol the rows were trained with: its history length
    history_frames = rows_cfg.train.history_frames
    eval_set, codec = eval_set_for_clip(
        clip.heldout, base_cfg.codec, base_cfg.history.rates, rows_cfg.train, EVAL_WINDOWS, EVAL_QUERIES, seed=0
    )

    results: dict = {
        "preset": preset,
        "protocol": (
            f"{EVAL_WINDOWS} evenly spaced held-out windows of {history_frames} frames "
            f"({history_frames / base_cfg.data.fps:.0f} s at {base_cfg.data.fps:g} fps, "
            f"{base_cfg.data.size}x{base_cfg.data.size}) "
            f"from the last {base_cfg.data.heldout_fraction:.0%} of the clip; {EVAL_QUERIES} fixed-seed query frames "
            "per window; history masked as in training; PSNR/SSIM of frames sampled with 20 Euler steps; "
            "one-step = x0 estimate from pure noise."
        ),
        "methods": {},
    }
    try:
        lpips = LPIPS("alex")
    except FileNotFoundError as exc:
        print(f"[demo] LPIPS left out: {exc}")
        lpips = None
    samples = {}
    for method in METHODS:
        model, cfg = load_model(folders[method])
        print(f"[demo] evaluating {method}")
        metrics, sampled = evaluate_method(model, eval_set, text, codec, lpips=lpips)
        metrics["context_tokens"], _ = context_size(cfg.base, cfg.data, cfg.history.rates, method, history_frames)
        metrics["steps"] = trained_steps(folders[method])
        results["methods"][method] = metrics
        samples[method] = sampled
    results["references"] = reference_metrics(eval_set, clip.train, codec, base_cfg.history.rates)

    # Fig. 5-style grid: the first query frame of 8 windows.
    picks = list(range(0, EVAL_WINDOWS, EVAL_WINDOWS // 8))[:8]
    truth = queried_pixels(eval_set)
    rows = [("ground truth", np.stack([to_uint8(truth[i])[0] for i in picks]))]
    rows += [(LABELS[m], np.stack([to_uint8(samples[m][i])[0] for i in picks])) for m in METHODS]
    grid_image(rows, out / "frame_query.png")

    if finetune_steps > 0:
        cfg = apply_overrides(  # the proposed row's own config (its protocol and architecture), trained on
            rows_cfg,
            [
                f'data.cache="{cache}"',
                f"train.steps={finetune_steps}",
                "train.warmup_steps=10",
                f"train.checkpoint_every={finetune_steps}",
                "train.learning_rate=5e-5",
                "train.encoder_learning_rate=5e-5",
            ],
        )
        print(f"[demo] live stage-I fine-tune of the proposed model ({finetune_steps} steps)")
        t0 = time.time()
        shutil.rmtree(out / "finetune", ignore_errors=True)  # a fresh fine-tune each run, never a resumed one
        summary = train(cfg, out / "finetune", init_from=folders["proposed"])
        before = results["methods"]["proposed"]
        tuned, _ = load_model(out / "finetune" / "final")
        after, _ = evaluate_method(tuned, eval_set, text, codec)
        results["finetune"] = {
            "steps": summary["steps"],
            "cache": "the demo clip's" if own_cache else f"the user's {cache}",
            "seconds": time.time() - t0,
            "heldout_loss_before": before["heldout_loss"],
            "heldout_loss_after": after["heldout_loss"],
        }
    if stage2:
        stage2_ckpts = stage2_folders(out, ckpt_root, folders, from_scratch, cache, preset, common)
        results["stage2"] = run_stage2(out, clip.heldout, stage2_ckpts, sample_steps, preset, common)
    results["seconds"] = time.time() - started
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(_markdown(results))
    print(_markdown(results))
    print(
        f"[demo] wrote {out / 'results.json'}, {out / 'results.md'}, {out / 'frame_query.png'}"
        + (f", {out / 'continuation.mp4'}, {out / 'continuation.png'} (and continuation_none.*)" if stage2 else "")
        + " "
        f"in {results['seconds']:.0f} s"
    )
    return results
