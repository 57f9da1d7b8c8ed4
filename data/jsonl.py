"""JSON Lines files, plain or gzipped: every data set in ../shared/data is read through `read_jsonl`."""

from __future__ import annotations

import gzip
import json
from pathlib import Path


def read_jsonl(path: Path) -> list[dict]:
    """The objects of a JSON Lines file (a `.gz` one is decompressed); blank lines are skipped."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
