"""Command-line interface: parse, load config, call the library. No logic lives here."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


def _cmd_context(args: argparse.Namespace) -> int:
    from tinyhistory.geometry import Rate, context_report, get_base

    base = get_base(args.base)
    pixels = base.vae_spatial * max(base.patch[1:])  # one DiT token's side in pixels
    if min(args.height, args.width) < pixels:
        raise ValueError(
            f"--height {args.height} --width {args.width}: below one DiT patch of {base.name} ({pixels} pixels a side: "
            f"VAE ×{base.vae_spatial}, patch {base.patch[1]}×{base.patch[2]}); such a frame has no tokens"
        )
    report = context_report(base, args.height, args.width, args.fps, args.seconds, [Rate.parse(r) for r in args.rate])
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        d = report.as_dict()
        width = max(len(k) for k in d)
        for key, value in d.items():
            print(f"{key:<{width}}  {value}")
    return 0


def _cmd_cost(args: argparse.Namespace) -> int:
    """Exact FLOPs of each history method for a preset (meta device: a 14B DiT costs seconds, no weights)."""
    from tinyhistory.sizing.cost import PROPOSED_RATES, TIER_SETS, CostModel, CostSettings, TierSet, markdown_table

    settings = CostSettings(
        preset=args.preset,
        height=args.height,
        width=args.width,
        fps=args.fps,
        segment_seconds=args.segment_seconds,
        history_seconds=tuple(args.history),
        steps=args.steps,
        cfg=args.cfg,
        methods=tuple(dict.fromkeys(args.method)) if args.method else CostSettings.methods,
        proposed_rates=tuple(tuple(r.split("+")) for r in args.rate) if args.rate else PROPOSED_RATES,
        kv_cache=args.kv_cache,
        block_causal=args.block_causal,
        tier_sets=_tier_sets(args.tiers, args.tier_move, TIER_SETS, TierSet),
    )
    model = CostModel(settings)
    rows = model.rows()
    if args.json:
        print(json.dumps([r.as_dict() for r in rows], indent=2))
    else:
        print(model.header())
        print()
        print(markdown_table(rows))
    return 0


def _tier_sets(specs: list[str] | None, move: float | None, default: tuple, tier_set) -> tuple:
    """``--tiers`` (``none``: no tier rows; unset: the default set) with ``--tier-move`` seconds."""
    if specs is None:
        return default if move is None else tuple(tier_set(d.rates, d.seconds, move) for d in default)
    if specs == ["none"]:
        return ()
    return tuple(tier_set.parse(spec, move if move is not None else default[0].move) for spec in specs)


def _cmd_plan(args: argparse.Namespace) -> int:
    """Predicted GPU and RAM peaks and the settings that fit (meta device: seconds, no weights, no GPU)."""
    from tinyhistory.sizing.cost import TIER_SETS, TierSet
    from tinyhistory.sizing.plan import PlanSettings, make_plan, parse_gib, render_text

    settings = PlanSettings(
        preset=args.preset,
        model_path=args.model,
        gpu_memory_gib=parse_gib(args.gpu_memory, "--gpu-memory"),
        ram_gib=parse_gib(args.ram, "--ram"),
        train=not args.generate,
        generate=not args.train,
        stage=args.stage,
        history_seconds=args.history_seconds,
        height=args.height,
        width=args.width,
        tiers=_plan_tiers(args.tiers, args.tier_move, TIER_SETS, TierSet),
    )
    plan = make_plan(settings)
    print(json.dumps(plan, indent=2) if args.json else render_text(plan))
    return 0


def _plan_tiers(spec: str | None, move: float | None, default: tuple, tier_set):
    """``plan --tiers`` (one tier set, e.g. ``4x4x2:20+8x8x4@stacked:20``) with ``--tier-move``, or None."""
    if spec is None:
        return None
    return tier_set.parse(spec, move if move is not None else default[0].move)


def _cmd_train(args: argparse.Namespace) -> int:
    import torch

    from tinyhistory.config import load_config
    from tinyhistory.train.trainer import train

    overrides = _model_override(args) + list(args.set or [])
    overrides.append(f'train.stage="{args.stage}"')
    if args.method:
        overrides.append(f'history.method="{args.method}"')
    if args.rate:
        overrides.append("history.rates=[" + ",".join(f'"{r}"' for r in args.rate) + "]")
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
    cfg = load_config(args.preset, args.config, overrides)
    _check_train_outputs(cfg, args.out, args.init_from)
    dtype = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[args.save_dtype]
    summary = train(
        cfg,
        args.out,
        init_from=args.init_from,
        progress=not args.no_progress,
        save_dtype=dtype,
        stop_after=args.stop_after,
    )
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_eval_lpips(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from tinyhistory.eval.lpips import LPIPS, uint8_to_lpips_input

    images = []
    for path in (args.ref, args.dist):
        try:
            images.append(np.asarray(Image.open(path).convert("RGB")))
        except (FileNotFoundError, OSError) as exc:
            raise ValueError(f"{path}: cannot read image ({exc})") from None
    if min(images[0].shape[:2]) < 32:  # AlexNet/VGG pool five times; smaller images vanish before the last layer
        raise ValueError(f"{args.ref} is {images[0].shape[:2]}; LPIPS needs images of at least 32x32 pixels")
    if images[0].shape != images[1].shape:
        raise ValueError(
            f"{args.ref} is {images[0].shape[:2]} but {args.dist} is {images[1].shape[:2]}; sizes must match"
        )
    value = LPIPS(args.net)(uint8_to_lpips_input(images[0]), uint8_to_lpips_input(images[1])).item()
    print(f"{value:.4f}")
    return 0


def _cmd_eval_consistency(args: argparse.Namespace) -> int:
    from tinyhistory.data.video import decode_video
    from tinyhistory.eval.consistency import consistency_report, write_report
    from tinyhistory.eval.optional import optional_report

    generated = decode_video(args.video, fps=args.fps, size=args.size)
    history = decode_video(args.history, fps=args.fps, size=args.size)
    report = consistency_report(generated, history)
    report["optional"] = optional_report(generated, args.raft_weights, args.aesthetic_clip, args.aesthetic_head)
    write_report(report, args.out)
    print(json.dumps(report, indent=2))
    return 0


def _cmd_eval_frame_query(args: argparse.Namespace) -> int:
    from tinyhistory.eval.frame_query import frame_query_report

    report = frame_query_report(args.checkpoint, args.data, args.out, args.windows, args.queries, args.seed)
    print(json.dumps({k: v for k, v in report.items() if k != "per_window"}, indent=2))
    return 0


def _cmd_codec_train(args: argparse.Namespace) -> int:
    from tinyhistory.codecs.learned_train import CodecTrainSettings, train_codec

    settings = CodecTrainSettings(
        video=args.video,
        out=args.out,
        fps=args.fps,
        size=args.size,
        start=args.start,
        seconds=args.seconds,
        heldout_fraction=args.heldout_fraction,
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        lpips_weight=args.lpips_weight,
        latent_channels=args.latent_channels,
        channels=tuple(args.channels),
        seed=args.seed,
        checkpoint_minutes=args.checkpoint_minutes,
        checkpoint_every=args.checkpoint_every,
    )
    print(json.dumps(train_codec(settings, progress=not args.no_progress), indent=2))
    return 0


def _check_train_outputs(cfg, out: str, init_from: str | None) -> None:
    """What ``train`` writes in ``--out`` never is, holds or lies inside what it reads (:mod:`tinyhistory.inputs`)."""
    from tinyhistory.inputs import check_outputs_spare_inputs, inputs_of
    from tinyhistory.locks import LOCK_NAME

    folder = Path(out)
    written = [folder / name for name in ("config.json", "train_log.jsonl", "summary.json", LOCK_NAME, "last",
                                          "last.tmp", "last.old", "final", "final_ema")]  # fmt: skip
    read = [("--init-from", init_from), ("model.path (--model)", cfg.model.path), ("data.cache", cfg.data.cache),
            ("data.video", cfg.data.video), ("codec.path", cfg.codec.path), ("text.path", cfg.text.path),
            ("text.cache", cfg.text.cache), ("backbone.base_transformer", cfg.backbone.base_transformer)]  # fmt: skip
    read += [("data.extra_train_videos", v) for v in cfg.data.extra_train_videos]
    check_outputs_spare_inputs("--out", out, written, inputs_of(read))


def _cmd_data_prepare(args: argparse.Namespace) -> int:
    from tinyhistory.config import load_config
    from tinyhistory.data.prepare import run_prepare

    cfg = load_config(args.preset, args.config, _model_override(args) + list(args.set or []))
    source, out = args.input or cfg.prepare.input, args.out or cfg.prepare.out
    if not source or not out:
        raise ValueError("data prepare needs --input and --out (or prepare.input / prepare.out in the --config TOML)")
    from tinyhistory.inputs import check_outputs_spare_inputs, inputs_of
    from tinyhistory.locks import LOCK_NAME

    names = ("shards", "manifest.jsonl", "report.json", "report.rank0.json", "empty_prompt.safetensors", LOCK_NAME)
    written = [Path(out), *(Path(out) / name for name in names)]
    read = inputs_of([("--input", source)], inside_ok=True)  # (a cache folder beside the videos is not a video)
    read += inputs_of([("model.path (--model)", cfg.model.path), ("codec.path", cfg.codec.path),
                       ("text.path", cfg.text.path)])  # fmt: skip
    check_outputs_spare_inputs("--out", out, written, read)
    return run_prepare(cfg, source, out, args.window_frames, prune=args.prune)


def _cmd_data_inspect(args: argparse.Namespace) -> int:
    from tinyhistory.data.cache import inspect_cache

    summary = inspect_cache(args.cache)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"{summary['cache']}: {summary['videos']} videos, {summary['windows']} windows, "
            f"{summary['latent_frames']} latent frames, {summary['shots']} storyboard shots"
        )
        for video in summary["per_video"]:
            print(
                f"  {video['source']}: {video['seconds']} s, {video['windows']} windows, latents "
                f"{video['latent_shape']} × {video['latent_frames']} frames, rates {', '.join(video['rates'])}, "
                f"{video['shots']} shots"
            )
        for bad in summary["damaged"]:
            print(f"  DAMAGED {bad['shard']} ({bad['source']}): {bad['reason']}")
        if summary["stale_shards"]:
            print(f"  {len(summary['stale_shards'])} shards on disk outside the manifest (earlier settings)")
    return 1 if summary["damaged"] else 0


def _cmd_reproduce_table1(args: argparse.Namespace) -> int:
    from tinyhistory.reproduce.table1 import reproduce_table1

    reproduce_table1(
        args.out,
        preset=args.preset,
        steps=args.steps,
        rows=args.rows.split(",") if args.rows else None,
        overrides=_model_override(args) + list(args.set or []),
        jobs=args.jobs,
        windows=args.windows,
        seeds=args.seeds,
        seeded_rows=args.seeded_rows.split(",") if args.seeded_rows else None,
    )
    return 0


def _cmd_data_frames(args: argparse.Namespace) -> int:
    from tinyhistory.data.frames import save_frames
    from tinyhistory.data.video import decode_video

    frames = decode_video(args.video, fps=args.fps, size=args.size)
    save_frames(args.out, frames, args.fps)
    print(f"{args.out}: {frames.shape[0]} frames of {frames.shape[1]}x{frames.shape[2]} at {args.fps:g} fps")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from tinyhistory.generate.run import generate

    settings = {
        "sampler": args.sampler,
        "steps": args.steps,
        "guidance": args.guidance,
        "distilled_guidance": args.distilled_guidance,
        "seed": args.seed,
        "segment_frames": args.segment_frames,
        "flow_shift": args.flow_shift,
    }
    _check_sampling_limits(args)
    from tinyhistory.inputs import check_outputs_spare_inputs, inputs_of

    out = Path(args.out)
    written = [out.with_name(out.name + suffix) for suffix in ("", ".session", ".png", ".segments.jsonl", ".lock",
                                                               ".previous.mp4")]  # fmt: skip
    read = inputs_of([("--checkpoint", args.checkpoint), ("--model", args.model)], inside_ok=True)
    files = inputs_of([("--storyboard", args.storyboard), ("--history", args.history), ("--image", args.image)])
    read += [given for given in files if given.path.is_file()]  # (not a file: generate says what is wrong with it)
    check_outputs_spare_inputs("--out", out, written, read)  # (--resume's session is its own output: continued)
    result = generate(
        args.checkpoint,
        args.storyboard,
        args.out,
        preset=args.preset,
        history=args.history,
        image=args.image,
        resume=args.resume,
        settings=settings,
        offload=args.offload,
        progress=not args.no_progress,
        model_path=args.model,
        overrides=list(args.set or []),
        overwrite=args.overwrite,
    )
    print(json.dumps(result, indent=2))
    return 0


def _check_sampling_limits(args: argparse.Namespace) -> None:
    """Steps, seed and segment length within what the run can use (:mod:`tinyhistory.limits`), before the model
    loads. The segment's bound needs the storyboard and the checkpoint's fps; where either does not read, ``generate``
    says why in its own words."""
    from tinyhistory.limits import check_sampling_steps, check_seed, check_segment_frames

    check_sampling_steps(args.steps)
    check_seed(args.seed)
    if args.segment_frames is None and args.history is None:
        return
    try:
        from tinyhistory.paths import resolve_path
        from tinyhistory.text.storyboard import Storyboard
        from tinyhistory.train.checkpoint import read_config

        story = Storyboard.load(resolve_path(args.storyboard))
        cfg = read_config(resolve_path(args.checkpoint))
    except (OSError, ValueError):
        return
    # (temporal factor 1: pixel frames bound latent frames for every codec, without loading one)
    check_segment_frames(args.segment_frames, story.duration, cfg.data.fps, 1, cfg.train.segment_frames)
    if args.history is not None:
        _check_history_length(resolve_path(args.history), cfg)


# Pixel frames per latent frame of each codec kind, and whether the first frame is a latent frame of its own (the
# causal VAEs: 1 + 4k frames); a kind not listed is not checked here.
_TEMPORAL = {"pixel": (1, False), "learned": (1, False), "wan": (4, True), "hunyuan": (4, True), "ltx": (8, True)}


def _check_history_length(history: Path, cfg) -> None:
    """A ``--history`` shorter than one history block (the encoders' temporal rate, in latent frames) gives the model
    no history at all: the run would go on as if none was given. An error instead, naming the lengths."""
    from tinyhistory.data.video import count_video_frames
    from tinyhistory.geometry import Rate

    if cfg.history.method == "no_history" or cfg.codec.kind not in _TEMPORAL or not history.is_file():
        return
    factor, causal = _TEMPORAL[cfg.codec.kind]
    block = max(Rate.parse(r).t for r in cfg.history.rates)  # latent frames
    try:
        frames = count_video_frames(history, cfg.data.fps)
    except (OSError, ValueError):
        return  # generate names what is wrong with the file
    latent = (1 + (frames - 1) // factor if frames else 0) if causal else frames // factor
    if latent < block:
        needed = 1 + (block - 1) * factor if causal else block * factor
        raise ValueError(
            f"--history {history}: {frames} frame(s) at {cfg.data.fps:g} fps make {latent} latent frame(s), fewer "
            f"than one history block ({block} latent frames, rates {', '.join(cfg.history.rates)}); the model would "
            f"see no history. Give at least {needed} frames ({needed / cfg.data.fps:g} s), or --image for one frame"
        )


def _cmd_demo(args: argparse.Namespace) -> int:
    from tinyhistory.demo import run_demo

    run_demo(
        Path(args.out),
        from_scratch=args.from_scratch,
        checkpoints=args.checkpoints,
        finetune_steps=args.finetune_steps,
        stage2=not args.no_stage2,
        sample_steps=args.sample_steps,
        cache=args.cache,
        preset=args.preset,
    )
    return 0


def _cmd_studio(args: argparse.Namespace) -> int:
    from tinyhistory.studio import serve

    return serve(
        checkpoint=args.checkpoint,
        preset=args.preset,
        model_path=args.model,
        host=args.host,
        port=args.port,
        out=args.out,
        max_upload_mb=args.max_upload_mb,
        offload=args.offload,
        overrides=list(args.set or []),
    )


def _cmd_study(args: argparse.Namespace) -> int:
    """A blind A/B study of generated videos: ``new`` (make/finish), ``serve`` (the raters' page), ``report``."""
    if args.study_command == "new":
        from tinyhistory.study.layout import create_study

        study = create_study(
            args.out, args.system, args.storyboard, args.seed, args.history, args.steps, not args.no_progress
        )
        print(f"[study] {study.root}: {len(study.videos)} videos of {len(study.systems)} systems, all registered")
        return 0
    if args.study_command == "serve":
        from tinyhistory.study.server import serve

        return serve(args.study, args.host, args.port)
    from tinyhistory.study.report import build_report

    report = build_report(args.study, args.out, args.rounds, args.seed, not args.no_metrics, not args.no_progress)
    for problem in report["problems"]:
        print(f"[study] warning: {problem}", file=sys.stderr)
    out = Path(args.out) if args.out else Path(args.study) / "report"
    print(f"[study] {report['votes']} votes, {report['raters']} raters: {out / 'report.md'}")
    return 0


def positive_int(text: str) -> int:
    """argparse type: a whole number > 0 (argparse then names the flag in its one-line error)."""
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (no NaN, no infinity)."""
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


MAX_HISTORY_SECONDS = 24 * 3600.0  # a day of video: far past any history a model keeps, still exact to count


def history_seconds(text: str) -> float:
    """argparse type: a history length in seconds, > 0 and at most a day (a billion seconds overflowed the token
    count of the real DiT's shapes in a traceback)."""
    value = positive_float(text)
    if value > MAX_HISTORY_SECONDS:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_HISTORY_SECONDS:g} s (a day of video), got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _model_override(args: argparse.Namespace) -> list[str]:
    """``--model DIR`` is ``--set model.path="DIR"`` (given first, so an explicit --set still wins)."""
    return [f"model.path={json.dumps(args.model)}"] if args.model else []


MODEL_HELP = (
    "your base model: a local folder in the Hub's diffusers layout (model_index.json, transformer/, vae/, "
    "text_encoder/, tokenizer/, scheduler/); same as --set model.path=DIR"
)


class DefaultsOnceFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every subcommand's --help shows the defaults (e.g. that CFG at guidance 3 is on, which doubles the cost), once:
    not when the help already says it ("default 20", "default: the preset's"), and not for a default of None or
    False (a flag that is off, a value that comes from elsewhere), which read "(default 20) (default: None)"."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text.lower() or action.default is None or action.default is False:
            return text
        return super()._get_help_string(action)


HELP_FORMAT = DefaultsOnceFormatter


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinyhistory", description="Compressed long-video history for video DiTs.")
    sub = parser.add_subparsers(dest="command", required=True)

    ctx = sub.add_parser(
        "context", formatter_class=HELP_FORMAT, help="context-length arithmetic: full vs compressed history tokens"
    )
    ctx.add_argument("--base", default="wan2.1-14b", help="base model geometry (wan2.1-14b, hunyuanvideo, tiny, …)")
    ctx.add_argument("--height", type=positive_int, default=480)
    ctx.add_argument("--width", type=positive_int, default=832)
    ctx.add_argument("--fps", type=positive_float, default=16.0)
    ctx.add_argument("--seconds", type=history_seconds, default=20.0)
    ctx.add_argument("--rate", action="append", default=None, help="encoding rate HxWxT; repeat for several encoders")
    ctx.add_argument("--json", action="store_true", help="print JSON")
    ctx.set_defaults(func=_cmd_context)

    cost = sub.add_parser(
        "cost",
        formatter_class=HELP_FORMAT,
        help="exact FLOPs of a history per denoising step and per generated second (meta device, no weights)",
    )
    cost.add_argument("--preset", default="wan2.2-ti2v-5b", help="wan2.2-ti2v-5b, hunyuanvideo, ltx-video, tiny, …")
    cost.add_argument("--height", type=positive_int, default=None, help="frame height; None: the preset's")
    cost.add_argument("--width", type=positive_int, default=None, help="frame width; None: the preset's")
    cost.add_argument("--fps", type=positive_float, default=None, help="frames per second; None: the preset's")
    cost.add_argument("--segment-seconds", type=positive_float, default=1.0, help="seconds generated per segment")
    cost.add_argument(
        "--history",
        type=history_seconds,
        nargs="+",
        default=[5.0, 20.0, 60.0, 120.0, 300.0, 600.0],
        help="history lengths (s)",
    )
    cost.add_argument("--steps", type=positive_int, default=30, help="denoising steps per segment")
    cost.add_argument(
        "--cfg", action=argparse.BooleanOptionalAction, default=True, help="classifier-free guidance (2 branches)"
    )
    cost.add_argument(
        "--method",
        action="append",
        default=None,
        choices=["no_history", "full", "window", "framepack", "proposed"],
        help="only these methods (repeat; None: all)",
    )
    cost.add_argument(
        "--rate",
        action="append",
        default=None,
        metavar="RATES",
        help="proposed rate set, e.g. 4x4x2 or 4x4x2+2x2x8 (repeat; None: 4x4x2, 2x2x2 and 4x4x2+2x2x8)",
    )
    cost.add_argument(
        "--kv-cache",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also the rows with the history KV cache (history.kv_cache)",
    )
    cost.add_argument(
        "--block-causal",
        action=argparse.BooleanOptionalAction,
        default=True,
        help='also the rows of the incremental block-causal cache (history.context_attention = "block_causal")',
    )
    cost.add_argument(
        "--tiers",
        action="append",
        default=None,
        metavar="TIERS",
        help="tiered proposed encoders (history.tiers), newest first with seconds, e.g. 4x4x2:20+8x8x4 (repeat; "
        "RATES@stacked[:SECONDS]: the stacked layout with that context window, e.g. 4x4x2:20+8x8x4@stacked:20; "
        "none: no tier rows; None: 4x4x2:20+8x8x4)",
    )
    cost.add_argument(
        "--tier-move", type=positive_float, default=None, help="seconds moved to a coarser tier at once (None: 10)"
    )
    cost.add_argument("--json", action="store_true", help="print a JSON list of rows")
    cost.set_defaults(func=_cmd_cost)

    pl = sub.add_parser(
        "plan",
        formatter_class=HELP_FORMAT,
        help="will it fit? predicted GPU and RAM peaks (unmeasured) and the settings that fit a card",
    )
    pl.add_argument(
        "--preset", default="wan2.2-ti2v-5b", help="wan2.1-t2v-1.3b, wan2.2-ti2v-5b, hunyuanvideo, ltx-video, …"
    )
    pl.add_argument("--model", default=None, metavar="DIR", help="take the sizes from this model folder's configs")
    # Strings, checked by the library: a bad amount is one line (exit 2), not argparse's usage block.
    pl.add_argument("--gpu-memory", default="24", metavar="GIB", help="memory of one GPU (GiB)")
    pl.add_argument("--ram", default="64", metavar="GIB", help="system RAM of the machine (GiB)")
    what = pl.add_mutually_exclusive_group()
    what.add_argument("--train", action="store_true", help="plan training only (default: training and generation)")
    what.add_argument("--generate", action="store_true", help="plan generation only")
    pl.add_argument("--stage", default="frame-query", choices=["frame-query", "ar"], help="the training stage")
    pl.add_argument("--history-seconds", type=history_seconds, default=20.0, help="history length (s)")
    pl.add_argument("--height", type=positive_int, default=480)
    pl.add_argument("--width", type=positive_int, default=832)
    pl.add_argument(
        "--tiers",
        default=None,
        metavar="TIERS",
        help="tiered encoders instead of one rate (history.tiers), newest first with seconds, e.g. 4x4x2:20+8x8x4; "
        "RATES@stacked[:SECONDS]: the stacked layout (history.tier_layout) with that context window",
    )
    pl.add_argument(
        "--tier-move", type=positive_float, default=None, help="seconds moved to a coarser tier at once (None: 10)"
    )
    pl.add_argument("--json", action="store_true", help="print JSON")
    pl.set_defaults(func=_cmd_plan)

    tr = sub.add_parser(
        "train",
        formatter_class=HELP_FORMAT,
        help="train: stage I (frame query) or stage II (autoregressive, --stage ar)",
    )
    tr.add_argument(
        "--stage", default="frame-query", choices=["frame-query", "ar"], help="frame-query (stage I) or ar (stage II)"
    )
    tr.add_argument("--preset", default="tiny", help="tiny, wan2.1-t2v-1.3b, wan2.1-t2v-14b, wan2.2-ti2v-5b, …")
    tr.add_argument("--model", default=None, metavar="DIR", help=MODEL_HELP)
    tr.add_argument("--config", default=None, help="TOML file overriding the preset")
    tr.add_argument("--method", default=None, help="proposed | only_lr | without_lr | large_patchifier | no_history")
    tr.add_argument("--rate", action="append", default=None, help="encoding rate HxWxT (repeat for several)")
    tr.add_argument("--steps", type=positive_int, default=None)
    tr.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. train.batch_size=4"
    )
    tr.add_argument("--init-from", default=None, help="start from a checkpoint folder's weights")
    tr.add_argument("--save-dtype", default="fp32", choices=["fp32", "fp16", "bf16"], help="dtype of final weights")
    tr.add_argument("--out", required=True, help="run folder (re-running resumes from OUT/last)")
    tr.add_argument(
        "--stop-after", type=positive_int, default=None, help="leave after N steps (checkpointed); rerun resumes"
    )
    tr.add_argument("--no-progress", action="store_true")
    tr.set_defaults(func=_cmd_train)

    ev = sub.add_parser("eval", formatter_class=HELP_FORMAT, help="evaluation tools")
    ev_sub = ev.add_subparsers(dest="eval_command", required=True)
    lp = ev_sub.add_parser(
        "lpips", formatter_class=HELP_FORMAT, help="LPIPS distance between two images (official v0.1 values)"
    )
    lp.add_argument("ref")
    lp.add_argument("dist")
    lp.add_argument("--net", default="alex", choices=["alex", "vgg"])
    lp.set_defaults(func=_cmd_eval_lpips)
    co = ev_sub.add_parser(
        "consistency",
        formatter_class=HELP_FORMAT,
        help="feature, identity and dynamics scores of a video against its history",
    )
    co.add_argument("--video", required=True, help="the generated continuation")
    co.add_argument("--history", required=True, help="the history it continues")
    co.add_argument("--out", required=True, help="folder for consistency.json and consistency.md")
    co.add_argument("--fps", type=positive_float, default=4.0, help="frames per second sampled from both videos")
    co.add_argument(
        "--size", type=positive_int, default=None, help="square-crop and resize to SIZE (default: native frames)"
    )
    co.add_argument("--raft-weights", default=None, help="optional: torchvision RAFT state dict (dynamic degree)")
    co.add_argument("--aesthetic-clip", default=None, help="optional: local CLIP ViT-L/14 folder (LAION aesthetic)")
    co.add_argument("--aesthetic-head", default=None, help="optional: LAION aesthetic MLP head (.pth state dict)")
    co.set_defaults(func=_cmd_eval_consistency)
    fq = ev_sub.add_parser(
        "frame-query", formatter_class=HELP_FORMAT, help="frame-query reconstruction (Table 1 protocol) on any video"
    )
    fq.add_argument("--checkpoint", required=True, help="a checkpoint folder (e.g. checkpoints/miniature/proposed)")
    fq.add_argument("--data", required=True, help="a video file")
    fq.add_argument("--out", required=True)
    fq.add_argument("--windows", type=positive_int, default=24)
    fq.add_argument("--queries", type=positive_int, default=2)
    fq.add_argument("--seed", type=int, default=0)
    fq.set_defaults(func=_cmd_eval_frame_query)

    codec = sub.add_parser("codec", formatter_class=HELP_FORMAT, help="the tiny preset's learned codec")
    codec_sub = codec.add_subparsers(dest="codec_command", required=True)
    ct = codec_sub.add_parser(
        "train",
        formatter_class=HELP_FORMAT,
        help="train a framewise 8x autoencoder (L1 + LPIPS) on a video's training part; rerun to resume",
    )
    ct.add_argument("--video", default="assets/bbb_128px_8fps.mp4", help="the footage (its tail is held out)")
    ct.add_argument("--out", default="runs/miniature/codec", help="the run folder; the codec is written there")
    ct.add_argument("--fps", type=positive_float, default=8.0)
    ct.add_argument("--size", type=positive_int, default=128, help="square frames of SIZE pixels")
    ct.add_argument("--start", type=non_negative_float, default=0.0, help="seconds into the video")
    ct.add_argument("--seconds", type=positive_float, default=None, help="how much of it (default: all)")
    ct.add_argument("--heldout-fraction", type=positive_float, default=0.2, help="the held-out tail")
    ct.add_argument("--steps", type=positive_int, default=2000)
    ct.add_argument("--batch-size", type=positive_int, default=16)
    ct.add_argument("--learning-rate", type=positive_float, default=1e-3)
    ct.add_argument("--lpips-weight", type=non_negative_float, default=0.5)
    ct.add_argument("--latent-channels", type=positive_int, default=16)
    ct.add_argument("--channels", type=positive_int, nargs="+", default=[32, 64, 128], help="widths at 1/2, 1/4, 1/8")
    ct.add_argument("--seed", type=int, default=0)
    ct.add_argument("--checkpoint-minutes", type=positive_float, default=10.0)
    ct.add_argument("--checkpoint-every", type=positive_int, default=100, help="steps between checkpoints")
    ct.add_argument("--no-progress", action="store_true")
    ct.set_defaults(func=_cmd_codec_train)

    data = sub.add_parser("data", formatter_class=HELP_FORMAT, help="data preparation")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    dp = data_sub.add_parser(
        "prepare",
        formatter_class=HELP_FORMAT,
        help="cache latents and text embeddings for training (exit 3: items skipped, some or all)",
    )
    dp.add_argument("--preset", default="tiny")
    dp.add_argument("--model", default=None, metavar="DIR", help=MODEL_HELP)
    dp.add_argument("--config", default=None, help="TOML file overriding the preset (may hold a [prepare] table)")
    dp.add_argument("--set", action="append", metavar="KEY=VALUE")
    dp.add_argument("--input", help="a folder of videos (recursive), a JSONL file or one video (or prepare.input)")
    dp.add_argument("--out", help="the cache folder (or prepare.out)")
    dp.add_argument(
        "--window-frames",
        type=positive_int,
        default=None,
        help="frames per cached window (default: data.window_frames)",
    )
    dp.add_argument(
        "--prune", action="store_true", help="keep only this run's videos in the manifest (lists what it dropped)"
    )
    dp.set_defaults(func=_cmd_data_prepare)

    di = data_sub.add_parser(
        "inspect", formatter_class=HELP_FORMAT, help="what a data-prepare cache holds; exit 1 if a shard is damaged"
    )
    di.add_argument("cache")
    di.add_argument("--json", action="store_true")
    di.set_defaults(func=_cmd_data_inspect)

    df = data_sub.add_parser(
        "frames", formatter_class=HELP_FORMAT, help="decode a video once into a lossless frame archive (*.frames.xz)"
    )
    df.add_argument("video")
    df.add_argument("--fps", type=positive_float, required=True)
    df.add_argument("--size", type=positive_int, default=None, help="square-crop and resize to SIZE (default: native)")
    df.add_argument("--out", required=True, help="archive path ending in .frames.xz")
    df.set_defaults(func=_cmd_data_frames)

    rep = sub.add_parser(
        "reproduce", formatter_class=HELP_FORMAT, help="reproductions of the paper's tables at small scale"
    )
    rep_sub = rep.add_subparsers(dest="reproduce_command", required=True)
    t1 = rep_sub.add_parser(
        "table1", formatter_class=HELP_FORMAT, help="train and score every Table-1 row (frame-query reconstruction)"
    )
    t1.add_argument("--preset", default="tiny")
    t1.add_argument("--out", required=True)
    t1.add_argument("--model", default=None, metavar="DIR", help=MODEL_HELP)
    t1.add_argument("--steps", type=positive_int, default=None, help="training steps per row (default: the preset's)")
    t1.add_argument("--rows", default=None, help="comma-separated row keys (default: all seven)")
    t1.add_argument("--jobs", type=positive_int, default=1, help="rows trained at once (subprocesses)")
    t1.add_argument("--windows", type=positive_int, default=24, help="held-out evaluation windows")
    t1.add_argument("--seeds", type=positive_int, default=1, help="train each seeded row with seeds 0..K-1")
    t1.add_argument("--seeded-rows", default=None, help="comma-separated rows that get --seeds (default: all)")
    t1.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override for every row")
    t1.set_defaults(func=_cmd_reproduce_table1)

    ge = sub.add_parser(
        "generate",
        formatter_class=HELP_FORMAT,
        help="stream a storyboard into a video, one segment at a time (stage II model)",
    )
    ge.add_argument("--preset", default=None, help="check that the checkpoint was trained with this preset")
    ge.add_argument("--checkpoint", required=True, help="a stage-II checkpoint folder")
    ge.add_argument("--model", default=None, metavar="DIR", help="the base model folder, if not the one trained on")
    ge.add_argument("--storyboard", required=True, help="storyboard JSON (shot times from the start of generation)")
    ge.add_argument("--out", required=True, help="the mp4 to write (also OUT.png, OUT.segments.jsonl, OUT.session)")
    start = ge.add_mutually_exclusive_group()
    start.add_argument("--history", default=None, help="a video to continue (the whole of it is history)")
    start.add_argument("--image", default=None, help="an image to start from")
    start.add_argument("--resume", default=None, help="an OUT.session file to continue")
    ge.add_argument(
        "--sampler", default=None, choices=["euler", "unipc"], help="default: unipc from the model folder, else euler"
    )
    ge.add_argument("--steps", type=positive_int, default=None, help="sampling steps per segment (default 20)")
    ge.add_argument(
        "--guidance",
        type=non_negative_float,
        default=None,
        help="classifier-free guidance scale (1 = off; default 3, HunyuanVideo 1: it is guidance-distilled)",
    )
    ge.add_argument(
        "--distilled-guidance",
        type=non_negative_float,
        default=None,
        help="the embedded guidance of a guidance-distilled DiT (HunyuanVideo; default 6.0, the pipeline's)",
    )
    ge.add_argument("--seed", type=int, default=None, help="default 0")
    ge.add_argument(
        "--segment-frames",
        type=positive_int,
        default=None,
        help="latent frames per segment (default: the preset's 1 s)",
    )
    ge.add_argument(
        "--flow-shift", type=non_negative_float, default=None, help="scheduler time shift (default: the folder's)"
    )
    ge.add_argument("--set", action="append", metavar="KEY=VALUE", help="override the checkpoint's config")
    ge.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the outputs of an earlier run at --out (never those of a run still writing there)",
    )
    ge.add_argument("--offload", action="store_true", help="diffusers group offload of the DiT (CUDA only)")
    ge.add_argument("--no-progress", action="store_true")
    ge.set_defaults(func=_cmd_generate)

    demo = sub.add_parser("demo", formatter_class=HELP_FORMAT, help="the embedded end-to-end demo (miniature)")
    demo.add_argument("--out", default="demo_out")
    demo.add_argument(
        "--preset", default="miniature", help="the preset the checkpoints were trained with (footage, codec, caption)"
    )
    demo.add_argument("--checkpoints", default=None, help="folder with the committed checkpoints (and stage2/)")
    demo.add_argument("--finetune-steps", type=positive_int, default=40, help="steps of the live fine-tune")
    demo.add_argument("--from-scratch", action="store_true", help="retrain every model (hours on a CPU)")
    demo.add_argument("--no-stage2", action="store_true", help="stop after the stage-I half")
    demo.add_argument(
        "--sample-steps", type=positive_int, default=20, help="Euler steps per generated segment (stage II)"
    )
    demo.add_argument(
        "--cache", default=None, help="train from this `data prepare` cache instead of caching the demo clip"
    )
    demo.set_defaults(func=_cmd_demo)

    st = sub.add_parser(
        "studio",
        formatter_class=HELP_FORMAT,
        help="a local web page: storyboard editor + streaming generation (the studio extra)",
    )
    st.add_argument("--preset", default=None, help="check that the checkpoint was trained with this preset")
    st.add_argument(
        "--checkpoint", default=None, help="a stage-II checkpoint folder (default: the demo's miniature model)"
    )
    st.add_argument("--model", default=None, metavar="DIR", help="the base model folder, if not the one trained on")
    st.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    st.add_argument("--port", type=int, default=7860)
    st.add_argument("--out", default="studio_out", help="folder for the runs (one subfolder per run)")
    st.add_argument("--max-upload-mb", type=float, default=2048, help="largest upload accepted (default 2048 MB)")
    st.add_argument("--set", action="append", metavar="KEY=VALUE", help="override the checkpoint's config")
    st.add_argument("--offload", action="store_true", help="diffusers group offload of the DiT (CUDA only)")
    st.set_defaults(func=_cmd_studio)

    sy = sub.add_parser(
        "study", formatter_class=HELP_FORMAT, help="blind A/B votes on generated videos and an Elo table with intervals"
    )
    sy_sub = sy.add_subparsers(dest="study_command", required=True)
    sn = sy_sub.add_parser(
        "new", formatter_class=HELP_FORMAT, help="make (or finish: rerun it) a study; generates what checkpoints lack"
    )
    sn.add_argument("--out", required=True, help="the study folder")
    sn.add_argument(
        "--system",
        action="append",
        required=True,
        metavar="NAME=RUN_OR_FOLDER",
        help="a system: a `generate` output folder (STORY.mp4 or STORY.seedS.mp4 for each STORY.json) or a checkpoint",
    )
    sn.add_argument("--storyboard", nargs="+", required=True, help="storyboard JSON files (the same for every system)")
    sn.add_argument("--seed", type=int, nargs="+", default=[0], help="seeds (one video per system, storyboard, seed)")
    sn.add_argument(
        "--history", default=None, help="a video every checkpoint system continues (and metrics compare to)"
    )
    sn.add_argument("--steps", type=positive_int, default=None, help="sampling steps for checkpoint systems")
    sn.add_argument("--no-progress", action="store_true")
    ss = sy_sub.add_parser(
        "serve", formatter_class=HELP_FORMAT, help="the raters' page (votes go to STUDY/votes.jsonl)"
    )
    ss.add_argument("study")
    ss.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1: this machine only)")
    ss.add_argument("--port", type=int, default=7870, help="port (0: any free one)")
    sr = sy_sub.add_parser("report", formatter_class=HELP_FORMAT, help="Elo ratings, intervals, agreement, metrics")
    sr.add_argument("study")
    sr.add_argument("--out", default=None, help="report folder (default STUDY/report)")
    sr.add_argument("--rounds", type=positive_int, default=1000, help="bootstrap rounds for the intervals")
    sr.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    sr.add_argument("--no-metrics", action="store_true", help="skip the automatic metrics")
    sr.add_argument("--no-progress", action="store_true")
    sy.set_defaults(func=_cmd_study)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "context" and not args.rate:
        args.rate = ["4x4x2"]
    if getattr(args, "no_progress", False):  # also the libraries' own "Loading weights" bars
        import diffusers
        import transformers

        diffusers.utils.logging.disable_progress_bar()
        transformers.utils.logging.disable_progress_bar()
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"tinyhistory: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a write no command wrapped: still one line when the disk is full or read-only
        from tinyhistory.files import disk_problem

        problem = disk_problem(exc)
        if problem is None:
            raise
        where = getattr(exc, "filename", None) or "an output"
        print(f"tinyhistory: error: {where}: {problem} ({type(exc).__name__})", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
