"""Command-line interface: parse, load config, call the library. No logic lives here.

One module per subcommand or group of subcommands, each with ``add_parser(subparsers)`` and its ``_cmd_*`` run
functions beside it; :mod:`tinyhistory.cli.arguments` holds the value types and the help formatter they share.
``build_parser`` lists the groups in the order ``tinyhistory --help`` shows them.
"""

from __future__ import annotations

import argparse
import sys

from tinyhistory.cli import apps, codec, data, evaluate, generate, reproduce, sizing, train


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: every subcommand with its options, defaults and help."""
    parser = argparse.ArgumentParser(prog="tinyhistory", description="Compressed long-video history for video DiTs.")
    sub = parser.add_subparsers(dest="command", required=True)
    sizing.add_parser(sub)  # context, cost, plan
    train.add_parser(sub)
    evaluate.add_parser(sub)  # eval lpips | consistency | frame-query
    codec.add_parser(sub)
    data.add_parser(sub)  # data prepare | inspect | frames
    reproduce.add_parser(sub)
    generate.add_parser(sub)
    apps.add_parser(sub)  # demo, studio, study
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit status (2: a bad value or a missing file, said in one line, no traceback)."""
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
