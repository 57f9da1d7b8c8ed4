"""Is a candidate router no worse than the deployed one, by the decision log? A paired off-policy comparison.

Both policies are scored on the same logged steps by the same estimator of
`agents.ope_estimators` (DR by default, or SNIPS), and the bootstrap resamples blocks of steps
once for both, so its interval is of the *difference* V(candidate) - V(deployed) in reward per
decision, not of two separate values (their errors are strongly correlated: same states, same
rewards). A block is a logged episode; a log with fewer than `MIN_EPISODES` episodes (a server
writes one long episode) is cut into runs of `block_steps` consecutive decisions, which keeps
most of the correlation between neighbouring steps inside one block.

"No worse with its confidence bound" means: the lower end of the 95% percentile bootstrap
interval of the difference (its 2.5th percentile) is >= 0. A candidate whose estimate is higher
but whose interval reaches below 0 is *not* shown no worse, and the deployed policy stays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agents.ope_estimators import ActionFeatures, LoggedSteps, OPEConfig, estimate_all

GATE_ESTIMATORS = ("dr", "snips")
MIN_EPISODES = 10


@dataclass(frozen=True)
class GateVerdict:
    estimator: str
    candidate: float            # estimated reward per decision
    deployed: float
    low: float                  # 95% bootstrap interval of candidate - deployed
    high: float
    num_steps: int
    num_blocks: int

    @property
    def difference(self) -> float:
        return self.candidate - self.deployed

    @property
    def is_no_worse(self) -> bool:
        """The interval's lower end is >= 0 (see the module docstring)."""
        return bool(self.low >= 0.0)

    def line(self) -> str:
        return (f"OPE {self.estimator} on {self.num_steps} held-out decisions ({self.num_blocks} bootstrap blocks): "
                f"candidate {self.candidate:.3f}, deployed {self.deployed:.3f}, candidate - deployed "
                f"{self.difference:+.3f}, 95% CI [{self.low:+.3f}, {self.high:+.3f}]")

    def to_json(self) -> dict:
        return {"estimator": self.estimator, "candidate": self.candidate, "deployed": self.deployed,
                "difference": self.difference, "ci95": [self.low, self.high], "num_steps": self.num_steps,
                "num_blocks": self.num_blocks, "no_worse": self.is_no_worse}


def bootstrap_blocks(episodes: np.ndarray, block_steps: int) -> np.ndarray:
    """[n] block id of each step: its episode, or with fewer than MIN_EPISODES episodes, its run of
    `block_steps` consecutive steps within the episode."""
    if len(np.unique(episodes)) >= MIN_EPISODES:
        return episodes
    blocks = np.empty(len(episodes), dtype=np.int64)
    next_id, start = 0, 0
    for end in list(np.flatnonzero(np.diff(episodes)) + 1) + [len(episodes)]:     # runs of one episode
        blocks[start:end] = next_id + np.arange(end - start) // block_steps
        next_id = int(blocks[end - 1]) + 1
        start = end
    return blocks


def compare_policies(data: LoggedSteps, candidate: tuple[np.ndarray, np.ndarray],
                     deployed: tuple[np.ndarray, np.ndarray], estimator: str = "dr", bootstrap: int = 200,
                     seed: int = 0, block_steps: int = 64, ridge: float = 1.0) -> GateVerdict:
    """`candidate` / `deployed`: (pi at obs, pi at next_obs), each [n, num_actions]."""
    if estimator not in GATE_ESTIMATORS:
        raise ValueError(f"estimator must be one of {GATE_ESTIMATORS}, got {estimator!r}")
    config = OPEConfig(ridge=ridge, fqe_iterations=1, bootstrap=bootstrap, seed=seed)   # FQE is not used here
    features = [ActionFeatures(data, *pis) for pis in (candidate, deployed)]

    def values(weights: np.ndarray | None) -> tuple[float, float]:
        new, old = (estimate_all(data, *pis, config, weights, f)[estimator]
                    for pis, f in zip((candidate, deployed), features))
        return new, old

    new, old = values(None)
    blocks = bootstrap_blocks(data.episodes, block_steps)
    ids, position = np.unique(blocks, return_inverse=True)
    rng = np.random.default_rng(seed)
    differences = []
    for _ in range(bootstrap):
        weights = np.bincount(rng.integers(0, len(ids), len(ids)), minlength=len(ids))[position]
        if weights.sum():
            a, b = values(weights)
            differences.append(a - b)
    low, high = np.percentile(differences, [2.5, 97.5]) if differences else (new - old, new - old)
    return GateVerdict(estimator, float(new), float(old), float(low), float(high), len(data), len(ids))
