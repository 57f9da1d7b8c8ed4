"""bench_serving's cells: the loads each configuration is measured under.

A closed loop of c clients sends a fixed number of requests (each client its next when its last
returns: `serving.loadgen`'s `--request-rate inf --max-concurrency c`); a Poisson cell sends what
arrives in a fixed time at its rate. Rates may be given, or set from plain decoding's measured
capacity in the first repeat, so "saturating" means past what this machine serves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from serving.loadgen import LoadgenConfig

MIN_CLOSED_LOOP_REQUESTS = 4


@dataclass
class Cell:
    """One load: a closed loop of `clients`, or Poisson arrivals at `rate` req/s (resolved from
    `fraction` x plain's capacity during the first repeat when no rate was given)."""

    clients: int = 0
    rate: float = 0.0
    fraction: float = 0.0

    @property
    def name(self) -> str:
        return f"closed c={self.clients}" if self.clients else f"poisson {self.rate:.2f}/s"

    def loadgen(self, args, repeat: int) -> LoadgenConfig:
        common = dict(dataset_name=args.prompts, max_tokens=args.max_tokens, min_tokens=args.max_tokens,
                      max_prompt_tokens=args.max_prompt_tokens, max_prompt_chars=4 * args.max_prompt_tokens,
                      slo_ttft_s=args.slo_ttft_s, slo_tpot_s=args.slo_tpot_s, seed=args.seed + repeat)
        if self.clients:
            return LoadgenConfig(request_rate=math.inf, max_concurrency=self.clients, **common,
                                 num_prompts=max(MIN_CLOSED_LOOP_REQUESTS, args.requests_per_client * self.clients))
        return LoadgenConfig(request_rate=self.rate, duration_s=args.poisson_duration_s, **common)


def plan_cells(args) -> list[Cell]:
    """The closed loops (`args.concurrency_list`), then the Poisson cells (`args.rate_list`, else
    `args.fraction_list` of the capacity, resolved later)."""
    poisson = [Cell(rate=r) for r in args.rate_list] or [Cell(fraction=f) for f in args.fraction_list]
    return [Cell(clients=c) for c in args.concurrency_list] + poisson


def resolve_rates(cells: list[Cell], runs: list[dict]) -> str:
    """Set the fraction-given rates from plain's requests/s in the largest closed loop (or, without
    plain, the slowest configuration's there); returns how the rates were chosen."""
    largest = max((c for c in cells if c.clients), key=lambda c: c.clients)
    measured = {r["config"]: r["report"]["request_throughput"] for r in runs if r["cell"] == largest.name}
    who = "plain" if measured.get("plain") else min(measured, key=measured.get) if measured else None
    if who is None or not measured[who]:
        raise RuntimeError("no closed-loop run measured a capacity to set the Poisson rates from")
    for cell in cells:
        cell.rate = cell.rate or cell.fraction * measured[who]
    return (f"{', '.join(f'{c.fraction:g}' for c in cells if c.fraction)} x {who}'s {measured[who]:.3f} req/s "
            f"at {largest.clients} clients")
