"""What every subcommand's options share: the argparse value types, the help formatter, ``--model``.

The types reject a bad value inside argparse, so the error is argparse's one line naming the flag (exit 2), not a
traceback from deep in the library.
"""

from __future__ import annotations

import argparse
import json
import math


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
    """argparse type: a finite number >= 0 (a guidance scale, a loss weight, a start time)."""
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def model_override(args: argparse.Namespace) -> list[str]:
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
