"""Where the project checkout is, and how a relative path in a config or a checkpoint is found."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def resolve_path(path: str | Path) -> Path:
    """A relative path is looked up in the working directory, then in the project checkout (as given if neither)."""
    p = Path(path)
    if p.exists() or p.is_absolute():
        return p
    project = PROJECT_ROOT / p
    return project if project.exists() else p
