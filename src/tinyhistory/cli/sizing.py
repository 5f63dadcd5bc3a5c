"""``context``, ``cost`` and ``plan``: the sizing subcommands, arithmetic and meta-device counts that need no weights
and no GPU (:mod:`tinyhistory.geometry`, :mod:`tinyhistory.sizing`)."""

from __future__ import annotations

import argparse
import json
import sys

from tinyhistory.cli.arguments import HELP_FORMAT, history_seconds, positive_float, positive_int


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
        for left_out in model.left_out:  # to stderr: stdout stays one JSON document
            print(left_out, file=sys.stderr)
    else:
        print(model.header())
        print()
        print(markdown_table(rows))
        if model.left_out:  # after a blank line: a line right under a markdown table would read as one of its rows
            print()
        for left_out in model.left_out:
            print(left_out)
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


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``context``, ``cost`` and ``plan`` to the top-level subcommands, in that order."""
    ctx = subparsers.add_parser(
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

    cost = subparsers.add_parser(
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

    pl = subparsers.add_parser(
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
