"""One place that decides whether a command's output would land on one of its inputs.

Every writing command names what it writes (files and whole folders) and what it reads (files and folders); an output
that is an input, holds one (a folder written whole: ``OUT/final``), or lies inside an input folder is refused before
any work, with one line naming both. Seen before this check existed: ``train --out`` equal to ``--init-from``
rewrote that checkpoint's ``config.json``; ``data prepare --out`` equal to its input folder wrote shards among the
videos; the committed ``checkpoints/`` of the project were open to any ``--out``.

The project's committed checkpoints are an input of every command: nothing writes into them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tinyhistory.paths import PROJECT_ROOT, resolve_path

COMMITTED = PROJECT_ROOT / "checkpoints"


@dataclass(frozen=True)
class Input:
    """One input of a run: ``flag`` says where it came from (``--init-from``, ``data.cache``); ``inside_ok``: writing
    new files inside it is harmless (the videos folder of ``data prepare``: a cache beside the videos is not one of
    them), so only replacing it or a file in it is refused."""

    flag: str
    path: Path
    inside_ok: bool = False


def inputs_of(pairs: Iterable[tuple[str, str | Path | None]], inside_ok: bool = False) -> list[Input]:
    """``Input``s from ``(flag, path)`` pairs, leaving out those not given; paths found as the run will find them."""
    return [Input(flag, resolve_path(path), inside_ok) for flag, path in pairs if path not in (None, "")]


def check_outputs_spare_inputs(out_flag: str, out: str | Path, written: Iterable[Path], inputs: list[Input]) -> None:
    """Refuse (``ValueError``, one line) an output in ``written`` (files, or folders written whole) that is an input,
    holds an input, or lies inside an input folder. The project's committed checkpoints are always an input."""
    inputs = [*inputs, Input("the project's committed checkpoints", COMMITTED)]
    for path in written:
        target = _absolute(path)
        for given in inputs:
            source = _absolute(given.path)
            if target == source:
                relation = "which is"
            elif source.is_relative_to(target):
                relation = "which holds"
            elif target.is_relative_to(source) and not given.inside_ok:
                relation = "inside"
            else:
                continue
            raise ValueError(
                f"{out_flag} {out}: this run would write {path}, {relation} {given.flag} {given.path} (an input, "
                f"never replaced by an output); choose another {out_flag}"
            )


def _absolute(path: Path) -> Path:
    """The path with symbolic links and ``..`` resolved (a link to an input is that input)."""
    return Path(path).expanduser().resolve()
