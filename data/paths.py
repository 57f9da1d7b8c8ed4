"""The repository's root and the data directory every prompt bank is read from."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    """`../shared/data` next to the repository, or $SPECROUTE_DATA where it is set.

    Raises FileNotFoundError (naming SPECROUTE_DATA) when the directory does not exist.
    """
    override = os.environ.get("SPECROUTE_DATA")
    path = Path(override) if override else (REPO_ROOT / ".." / "shared" / "data").resolve()
    if not path.is_dir():
        raise FileNotFoundError(f"data directory {path} does not exist; set SPECROUTE_DATA")
    return path
