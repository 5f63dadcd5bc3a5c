"""Reading the project's own files with errors that name the file and say what is wrong.

A truncated download, a half-copied checkpoint or a file of another kind must end in one line that a user can act
on, not a safetensors or JSON traceback. Every loader of a checkpoint, a LoRA, a session or a config goes through
these two functions.
"""

from __future__ import annotations

import json
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
