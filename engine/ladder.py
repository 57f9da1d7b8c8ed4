"""The chains a ladder of levels offers: what the benchmarks run and the server's cost model scores.

Model-free drafters start a chain; every model level may verify the one below it; the target
ends every chain. An EAGLE head (engine/eagle_level.py) is a draft level like the distilled one. Quantized copies of the target (EngineConfig.quantized_levels) sit between a
distilled draft and the target, as SpecRouter's intermediate level: a 4-level chain is
ngram -> draft -> int4 -> target.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.decision import TARGET
from engine.linear_kernels import QUANTIZED_FORMATS

MODEL_FREE_STARTS = ("ngram", "suffix")


def ladder_chains(model_levels: Sequence[str]) -> list[tuple[str, ...]]:
    """Every model-free chain, each model level alone and under n-gram proposals, and each
    draft through each quantized copy (with and without n-gram proposals below it)."""
    levels = [name for name in model_levels if name != TARGET]
    drafts = [name for name in levels if name not in QUANTIZED_FORMATS]
    quantized = [name for name in levels if name in QUANTIZED_FORMATS]
    chains: list[tuple[str, ...]] = [(start, TARGET) for start in MODEL_FREE_STARTS]
    for level in drafts + quantized:
        chains += [(level, TARGET), ("ngram", level, TARGET)]
    for draft in drafts:
        for copy in quantized:
            chains += [(draft, copy, TARGET), ("ngram", draft, copy, TARGET)]
    return chains
