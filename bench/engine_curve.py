"""The verification curve: one target forward's time against tokens per row, at a few batch sizes."""

from __future__ import annotations

import statistics
import time

TOKENS = (1, 2, 3, 5, 9, 16, 17)


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


def non_product_share(runner, batch: int, context: int = 200, repeats: int = 5) -> dict[str, float]:
    """One decode step (1 token per row) at `batch`: its time, the time inside the matrix products
    (every Linear of the layers and the head), and the share of the step outside them (norms,
    rotary, attention, index building, Python)."""
    # the products that multiply (a fused group of the dense kernel times its parts, so timing
    # the group too would count them twice; its concatenation is not a product)
    classes = {type(m) for layer in runner.layers for p in layer.products for m in getattr(p, "parts", [p])}
    classes |= {type(runner.lm_head)}
    inside = [0.0]
    originals = {cls: cls.__call__ for cls in classes}

    def timed(call):
        def wrapper(self, x):
            start = time.perf_counter()
            try:
                return call(self, x)
            finally:
                inside[0] += time.perf_counter() - start
        return wrapper

    prompt = [(7 * i) % 1000 + 5 for i in range(context)]
    slots = [runner.cache.allocate_slot() for _ in range(batch)]
    try:
        runner.forward(slots, [prompt] * batch, [1] * batch)
        for cls in classes:
            cls.__call__ = timed(originals[cls])
        steps, products = [], []
        for _ in range(repeats + 1):
            inside[0] = 0.0
            start = time.perf_counter()
            runner.forward(slots, [[11]] * batch, [1] * batch)
            steps.append(time.perf_counter() - start)
            products.append(inside[0])
            for slot in slots:
                runner.cache.rollback(slot, context)
    finally:
        for cls, call in originals.items():
            cls.__call__ = call
        for slot in slots:
            runner.cache.free_slot(slot)
    step, product = statistics.median(steps[1:]), statistics.median(products[1:])
    return {"step_ms": round(step * 1e3, 2), "product_ms": round(product * 1e3, 2),
            "non_product_share": round(1 - product / step, 4)}


def decode_verify_bitwise(runner, prompts: list[list[int]], steps: int = 41) -> dict[str, float]:
    """Over real prompts: positions whose logits are the same bits decoded alone and verified in
    9-token windows (engine.autotune.measure.count_drift, beside other rows too)."""
    from engine.autotune.measure import count_drift
    positions = differ = flips = 0
    for prompt in prompts:
        p, d, f = count_drift(runner, len(prompt), steps, seed=0, prompt=prompt)
        positions, differ, flips = positions + p, differ + d, flips + f
    return {"positions": positions, "logits_differ": differ, "argmax_flips": flips,
            "bitwise_share": round(1 - differ / positions, 4) if positions else None}
