"""File hashes, free of torch: cache keys of source videos, a study's videos, a base model's weights.

Kept apart from :mod:`tinyhistory.files` (which loads tensors) so that light commands such as ``study serve`` hash
their files without importing torch.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def hash_into(digest, path: str | Path) -> None:
    """Feed a file's bytes to a hashlib ``digest``, 1 MiB at a time (videos and weights are too big to read whole)."""
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)


def file_sha256(path: str | Path) -> str:
    """The sha256 of one file's bytes."""
    digest = hashlib.sha256()
    hash_into(digest, path)
    return digest.hexdigest()
