"""Reading and writing the project's own files with errors that name the file and say what is wrong.

A truncated download, a half-copied checkpoint or a file of another kind must end in one line that a user can act
on, not a safetensors or JSON traceback. Every loader of a checkpoint, a LoRA, a session or a config goes through
:func:`read_tensors` and :func:`read_json`; the JSONL logs the project appends to and reads back go through
:func:`read_jsonl`, which drops a last line cut short by a killed writer (and says so) instead of failing.

Writing: a full disk or a read-only folder surfaces in many disguises (safetensors' "os error 28", torch's
"unexpected pos", PyAV writing a short file without a word, a damaged mp4 box read back later). :func:`writing`
turns any of them into one :class:`WriteError` line that names the path and the cause ("no space left on device",
"read-only file system", "permission denied"); :func:`append_line` and :func:`replace_file` never leave a half
record or a half file where a whole one was.
"""

from __future__ import annotations

import errno
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch


def read_tensors(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """A safetensors file as a dict of CPU tensors; ``what`` says what the file should be (e.g. "LoRA file")."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for truncated or foreign files
        raise ValueError(f"{path}: not a readable {what} (damaged or not a safetensors file: {exc})") from None


def read_json(path: str | Path, what: str):
    """A JSON file's content; ``what`` says what the file should be (e.g. "checkpoint config")."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(f"{path}: not a readable {what} (damaged or not JSON: {exc})") from None


def read_jsonl(path: str | Path, what: str, drop_damaged: bool = False) -> list[dict]:
    """The records of a JSONL file the project wrote (a log, a manifest), in order.

    A writer killed in the middle of a line leaves a last line without its newline that does not parse: it is dropped
    and named in a warning (the record it held was not finished, so nothing complete is lost). A bad line elsewhere
    is not the mark of a killed writer but of a damaged file: an error naming the line, or with ``drop_damaged`` (a
    log, where a lost line costs nothing) a warning naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):  # the last line, without its newline: a write cut short
                print(
                    f"tinyhistory: warning: {path}:{number}: dropped a truncated last line of the {what} "
                    f"({len(line)} bytes, cut short while it was written)",
                    file=sys.stderr,
                )
                break
            problem = f"{path}:{number}: not a readable {what} line (damaged: {exc})"
        else:
            if isinstance(record, dict):
                records.append(record)
                continue
            problem = f"{path}:{number}: not a readable {what} line (expected a JSON object)"
        if not drop_damaged:
            raise ValueError(problem)
        print(f"tinyhistory: warning: {problem}; dropped", file=sys.stderr)
    return records


def repair_jsonl(path: str | Path, what: str, keep: Callable[[dict], bool] | None = None) -> list[dict]:
    """Rewrite a JSONL file the project appends to so that appending can go on: a truncated last line and damaged
    lines are dropped (named in a warning) and, with ``keep``, the records it rejects (work a resumed run does
    again); returns the records kept. The file is replaced whole, so it ends in a newline and the next record never
    joins a broken one."""
    path = Path(path)
    if not path.is_file():
        return []
    records = read_jsonl(path, what, drop_damaged=True)
    kept = [r for r in records if keep is None or keep(r)]
    text = "".join(json.dumps(r) + "\n" for r in kept)
    if path.read_text(encoding="utf-8", errors="replace") != text:
        replace_file(path, text.encode(), what)
    return kept


# -- writing ----------------------------------------------------------------------------------------------------------
# Errors that say the output cannot be written (as opposed to a bug or a bad input), in the user's words.
DISK_PROBLEMS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for this file system",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
_OS_ERROR = re.compile(r"os error (\d+)")  # how Rust libraries (safetensors) report an errno
_PHRASES = {"no space left on device": errno.ENOSPC, "disk quota exceeded": errno.EDQUOT,
            "read-only file system": errno.EROFS, "permission denied": errno.EACCES}  # fmt: skip


class WriteError(ValueError):
    """An output could not be written (disk full, read-only, no permission); a ``ValueError``, so the CLI prints it
    as one line and exits 2."""


def disk_problem(exc: BaseException | None) -> str | None:
    """The cause in words ("no space left on device", "read-only file system", …) if ``exc`` (or what caused it)
    is a failed write of that kind, else None. Libraries wrap the OS error in their own types (safetensors:
    "os error 28"; torch.save to a file object: a RuntimeError whose context is the OSError), so the chain and the
    message are searched."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_PROBLEMS:
            return DISK_PROBLEMS[exc.errno]
        text = str(exc).lower()
        match = _OS_ERROR.search(text)
        if match and int(match.group(1)) in DISK_PROBLEMS:
            return DISK_PROBLEMS[int(match.group(1))]
        for phrase, code in _PHRASES.items():
            if phrase in text:
                return DISK_PROBLEMS[code]
        exc = exc.__cause__ or exc.__context__
    return None


@contextmanager
def writing(path: str | Path, what: str, hint: str = "") -> Iterator[None]:
    """Around the writing of ``path``: a full disk or a read-only folder becomes one :class:`WriteError` line naming
    ``path``, the cause and (``hint``) how to go on; any other error (and any ``ValueError``, the project's own
    one-line errors) passes through unchanged."""
    try:
        yield
    except ValueError:  # our own one-line errors (a WriteError from further in, a lock held) are clear already
        raise
    except Exception as exc:
        problem = disk_problem(exc)
        if problem is None:
            raise
        raise WriteError(f"{path}: {problem} (writing the {what}){'; ' + hint if hint else ''}") from None


def replace_file(path: str | Path, data: bytes, what: str) -> None:
    """Write ``data`` to ``path`` whole or not at all: a temporary file beside it, then a rename (the old file stays
    until the new one is complete; a failed temporary is removed, so it does not hold the space it took)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with writing(path, what):
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def append_line(path: str | Path, line: str, what: str) -> None:
    """Append one record line (ending in a newline) to ``path``, unbuffered; on a failed write the file is cut back
    to where it was, so it never ends in half a record (truncating needs no free space)."""
    data = memoryview(line.encode())
    with writing(path, what):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            start = os.fstat(fd).st_size
            try:
                while data:
                    data = data[os.write(fd, data) :]
            except BaseException:
                os.ftruncate(fd, start)
                raise
        finally:
            os.close(fd)
