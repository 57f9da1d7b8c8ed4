"""The verification curve: one target forward's time against tokens per row, at a few batch sizes."""

from __future__ import annotations

import statistics
import time

TOKENS = (1, 2, 3, 5, 9, 17)


def verification_curve(runner, batches: tuple[int, ...] = (1, 4, 16), tokens: tuple[int, ...] = TOKENS,
                       context: int = 200, repeats: int = 7) -> dict[str, dict[str, float]]:
    """{batch: {tokens per row: median ms}} for forwards over rows that each hold `context`
    positions; every timed forward is rolled back, so all run at the same context."""
    curve: dict[str, dict[str, float]] = {}
    prompt = [(7 * i) % 1000 + 5 for i in range(context)]
    for batch in batches:
        slots = [runner.cache.allocate_slot() for _ in range(batch)]
        try:
            runner.forward(slots, [prompt] * batch, [1] * batch)
            row: dict[str, float] = {}
            for n in tokens:
                feed = [[(11 * j) % 900 + 3 for j in range(n)]] * batch
                times = []
                for _ in range(repeats + 1):           # the first call is a warm-up
                    start = time.perf_counter()
                    runner.forward(slots, feed, [n] * batch)
                    times.append(time.perf_counter() - start)
                    for slot in slots:
                        runner.cache.rollback(slot, context)
                row[str(n)] = round(statistics.median(times[1:]) * 1e3, 2)
            curve[str(batch)] = row
        finally:
            for slot in slots:
                runner.cache.free_slot(slot)
    return curve
