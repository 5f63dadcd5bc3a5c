"""``reproduce table1``: the paper's Table 1 at small scale (:mod:`tinyhistory.reproduce.table1`)."""

from __future__ import annotations

import argparse

from tinyhistory.cli.arguments import HELP_FORMAT, MODEL_HELP, model_override, positive_int


def _cmd_reproduce_table1(args: argparse.Namespace) -> int:
    from tinyhistory.reproduce.table1 import reproduce_table1

    reproduce_table1(
        args.out,
        preset=args.preset,
        steps=args.steps,
        rows=args.rows.split(",") if args.rows else None,
        overrides=model_override(args) + list(args.set or []),
        jobs=args.jobs,
        windows=args.windows,
        seeds=args.seeds,
        seeded_rows=args.seeded_rows.split(",") if args.seeded_rows else None,
    )
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``reproduce`` and ``reproduce table1`` to the top-level subcommands."""
    rep = subparsers.add_parser(
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
