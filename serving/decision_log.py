"""The server's decision log, written off the engine thread and rotated by size.

The router logs one row per decision on the engine thread; encoding and writing it there cost
the step time, and the file grew without bound (issue 19: 1.7 MB in 9 minutes of light traffic).
`BackgroundDecisionLog` takes rows on a bounded queue (the engine thread never blocks on disk:
when the writer falls a whole queue behind, rows are dropped and counted), and a writer thread
encodes, appends and flushes them in batches. When the file would pass `max_bytes`, it is
renamed `<name>.1` (older files shift to `.2` ... `.{keep}`, the oldest deleted) and a new
one is started; each file is a complete JSONL log `python -m agents.ope` reads. `close()`
writes every queued row before it returns: nothing is lost on a clean shutdown.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from pathlib import Path

from router.decision_log import DecisionLogRow

logger = logging.getLogger("serving")

_CLOSE = object()


class BackgroundDecisionLog:
    """Args:
        path: the JSONL file (appended to; rotated files sit next to it).
        max_bytes: size at which the file is rotated.
        keep: rotated files kept.
        max_queue: rows waiting for the writer at most.
    """

    def __init__(self, path: str | Path, max_bytes: int = 64 << 20, keep: int = 3, max_queue: int = 10_000):
        if max_bytes <= 0 or keep < 1 or max_queue <= 0:
            raise ValueError("max_bytes and max_queue must be > 0 and keep >= 1")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.keep = keep
        self.num_rows = 0           # rows written to disk
        self.num_dropped = 0        # rows refused because the queue was full
        self.num_rotations = 0
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._file = self.path.open("a", encoding="utf-8")
        self._size = self.path.stat().st_size
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="decision-log", daemon=True)
        self._thread.start()

    def write(self, row: DecisionLogRow) -> None:
        """Queue a row (never blocks; a full queue drops it and counts it)."""
        if self._closed:
            raise ValueError(f"decision log {self.path} is closed")
        try:
            self._queue.put_nowait(row)
        except queue.Full:
            self.num_dropped += 1
            if self.num_dropped == 1:
                logger.warning("decision log %s: the writer is behind; dropping rows (counted)", self.path)

    def close(self) -> None:
        """Write everything queued, then close the file."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_CLOSE)
        self._thread.join()

    # ---- writer thread ------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            item = self._queue.get()
            batch = [item]
            while item is not _CLOSE and not self._queue.empty():
                item = self._queue.get_nowait()
                batch.append(item)
            try:
                for row in batch:
                    if row is not _CLOSE:
                        self._append(json.dumps(row.to_json(), allow_nan=False) + "\n")
                self._file.flush()
            except (OSError, ValueError) as exc:      # a full disk must not stop the writer (or close())
                logger.error("decision log %s: write failed (%s); %d rows lost", self.path, exc, len(batch))
            if batch[-1] is _CLOSE:
                self._file.close()
                return

    def _append(self, line: str) -> None:
        size = len(line.encode("utf-8"))
        if self._size and self._size + size > self.max_bytes:
            self._rotate()
        self._file.write(line)
        self._size += size
        self.num_rows += 1

    def _rotate(self) -> None:
        self._file.close()
        for index in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{index + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        self._file = self.path.open("a", encoding="utf-8")
        self._size = 0
        self.num_rotations += 1
