"""The repository's root and the data directory every prompt bank is read from.

The data sets (Spec-Bench, MT-bench, HumanEval, ShareGPT prompts, the Azure code trace) are not
in the repository: they live in `../shared/data` beside the checkout, or wherever
$SPECROUTE_DATA points. A command that needs one and lacks it reports a `DataMissingError`
(or an OSError naming a file under that directory) as one line, via `missing_data_message`.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_ENV = "SPECROUTE_DATA"
DATA_HINT = f"set {DATA_ENV}=/path/to/data, a copy of shared/data (README, 'Data')"


class DataMissingError(FileNotFoundError):
    """A data set SpecRoute reads is not where $SPECROUTE_DATA (default ../shared/data) points."""


def configured_data_dir() -> Path:
    """Where the data sets should be: $SPECROUTE_DATA where it is set, else `../shared/data` next
    to the repository. Not checked: `data_dir()` is the one that insists it exists."""
    override = os.environ.get(DATA_ENV)
    return Path(override) if override else (REPO_ROOT / ".." / "shared" / "data").resolve()


def data_dir() -> Path:
    """`configured_data_dir()`, which must exist.

    Raises DataMissingError (a FileNotFoundError naming SPECROUTE_DATA) when it does not.
    """
    path = configured_data_dir()
    if not path.is_dir():
        raise DataMissingError(f"data directory {path} does not exist; {DATA_HINT}")
    return path


def missing_data_message(error: BaseException) -> str | None:
    """The one line a command prints for `error` when it means a data set is missing: a
    DataMissingError, or a FileNotFoundError for a path inside the data directory (a directory
    that exists but lacks a file). None for anything else, which stays an ordinary error."""
    if isinstance(error, DataMissingError):
        return " ".join(str(error).split())
    if not isinstance(error, FileNotFoundError) or not isinstance(error.filename, (str, bytes, os.PathLike)):
        return None
    directory = configured_data_dir().resolve()
    path = Path(os.fsdecode(error.filename)).resolve()
    if not path.is_relative_to(directory):
        return None
    return f"data file {path} not found in the data directory {directory}; {DATA_HINT}"
