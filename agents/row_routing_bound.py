"""How much could per-row routing gain over one decision per batch? `python -m agents.row_routing_bound`.

SpecRouter routes each request's path; our routers (learned and cost model) choose one (chain,
K) per step for the whole batch. This measures the most a per-row router could add, in the
simulator, with knowledge no router has: at sampled steps of cost-model episodes, every row's
outcome under every action is drawn from the simulator's own acceptance models, given the row's
category and this step's draft signals (common random numbers: the same uniforms for every
assignment), and each assignment of actions to rows is charged the simulator's clock for that
mixed step (`SimExecutor.step_time`: rows on different chains share each level's forward,
padded to its widest row). The best single action for the batch is compared with a per-row
assignment found by coordinate ascent from it. Both are chosen on one half of the draws and
scored on the other (scoring on the draws that chose would credit the per-row choice with their
luck), so the ratio bounds what per-row features could buy a router that knows each row's
acceptance as well as the draws tell it.

Writes bench/results/row_routing.{json,md} with a `summary`: `per_row_x_batch_goodput_mean`
(step-weighted over the sampled steps of every workload), `..._by_workload`, and
`share_steps_gain_over_5pct`.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np

from agents.cost_model_policy import CostModelPolicy
from agents.scenarios import evaluation_workloads, sim_env_kwargs
from cli.dataclass_args import parse_dataclass
from cli.results import publish_results
from engine.trackers import chain_pair_keys

DEFAULT_WORKLOADS = ("spec_bench-mix", "azure_code", "poisson-low", "poisson-medium", "poisson-high", "bursty",
                     "spec_bench-low-tight")


@dataclass
class BoundConfig:
    """What to sample: workloads, episodes, steps and draws per step."""

    workloads: tuple[str, ...] = field(default=DEFAULT_WORKLOADS, metadata={"help": "agents.scenarios workloads"})
    seeds: int = field(default=3, metadata={"help": "cost-model episodes per workload"})
    steps_per_episode: int = field(default=60, metadata={"help": "steps analysed per episode (at most)"})
    every: int = field(default=4, metadata={"help": "analyse every this many steps"})
    draws: int = field(default=32, metadata={
        "help": "outcome draws per row and action that choose the assignments (as many again score them)"})
    num_requests: int = field(default=200, metadata={"help": "requests per episode"})
    knows_signals: bool = field(default=True, metadata={
        "help": "choose knowing each row's draft signals; off: its category only (what per-request trackers learn)"})
    max_minutes: float = field(default=8.0, metadata={"help": "stop sampling after this long (0: no cap)"})
    output_name: str = field(default="row_routing", metadata={"help": "result file stem", "aliases": ["--name"]})
    output_dir: str = field(default="", metadata={"help": "directory of the result files; empty = bench/results",
                                                  "aliases": ["--results-dir"]})

    def __post_init__(self) -> None:
        if min(self.seeds, self.steps_per_episode, self.every, self.draws, self.num_requests) < 1:
            raise ValueError("seeds, steps-per-episode, every, draws and num-requests must be >= 1")


class StepOutcomes:
    """Every row's drawn outcomes under every action at one step, and the clock of any assignment."""

    def __init__(self, inner, draws: int, rng: np.random.Generator, knows_signals: bool = True):
        engine = inner.backend.engine
        self.executor = executor = engine.executor
        self.rows = list(engine.scheduler.running)
        self.decisions = inner.decisions
        self.num_tokens = [r.num_tokens for r in self.rows]
        self.cached = [dict(executor.cached.get(r.request_id, {})) for r in self.rows]
        self.ks = [[engine.draft_length(r, d) for d in self.decisions] for r in self.rows]
        width = max(len(d.chain) for d in self.decisions) + 1
        self.outcomes = []                   # [row][action][draw] -> RowResult
        for i, request in enumerate(self.rows):
            uniforms = rng.random((2 * draws, width)).tolist()   # shared by every action of the row
            signals = executor.signals(request)                  # this step's, as the step will draw given
            per_action = []
            for a, decision in enumerate(self.decisions):
                chain, k, signal = decision.chain, self.ks[i][a], signals.get(decision.chain[0])
                pairs = chain_pair_keys(chain)
                # the choosing half knows the signal or not; the scoring half is the step's truth
                chosen = [executor.draw_row(request.category, chain, pairs, k, u, signal if knows_signals else None,
                                            decision.p_min) for u in uniforms[:draws]]
                per_action.append(chosen + [executor.draw_row(request.category, chain, pairs, k, u, signal, decision.p_min)
                                            for u in uniforms[draws:]])
            self.outcomes.append(per_action)
        self.draws = draws

    def goodput(self, assignment: list[int], held_out: bool = False) -> float:
        """Committed tokens per second of the step, over the draws that choose (the first half)
        or, `held_out`, over the second half: scoring a choice on the draws it was made on
        would credit per-row choices with the luck of those draws."""
        chains = [self.decisions[a].chain for a in assignment]
        ks = [self.ks[i][a] for i, a in enumerate(assignment)]
        tokens = seconds = 0.0
        for m in range(self.draws, 2 * self.draws) if held_out else range(self.draws):
            results = [self.outcomes[i][a][m] for i, a in enumerate(assignment)]
            tokens += sum(len(r.tokens) for r in results)
            seconds += self.executor.step_time(self.num_tokens, self.cached, chains, ks, results)
        return tokens / seconds

    def best_uniform(self) -> tuple[list[int], float]:
        scored = [(self.goodput([a] * len(self.rows)), a) for a in range(len(self.decisions))]
        value, action = max(scored)
        return [action] * len(self.rows), value

    def best_per_row(self, start: list[int], value: float, passes: int = 3) -> tuple[list[int], float]:
        """Coordinate ascent: each row in turn takes the action that raises the step's goodput most."""
        assignment = list(start)
        for _ in range(passes):
            improved = False
            for i in range(len(assignment)):
                for a in range(len(self.decisions)):
                    if a == assignment[i]:
                        continue
                    trial = assignment[:i] + [a] + assignment[i + 1:]
                    score = self.goodput(trial)
                    if score > value * (1 + 1e-9):
                        assignment, value, improved = trial, score, True
            if not improved:
                break
        return assignment, value


def sample_workload(env, spec, cfg: BoundConfig, seed: int, rng: np.random.Generator, deadline: float | None) -> list[dict]:
    """Run one cost-model episode; every `cfg.every` steps, the per-row and batch-level bounds."""
    inner = env.unwrapped
    policy = CostModelPolicy.from_env(env)
    obs, _ = env.reset(seed=seed, options={"workload": spec})
    records, step, done = [], 0, False
    while not done:
        view = inner.batch_view()
        if view.rows and step % cfg.every == 0 and len(records) < cfg.steps_per_episode:
            if deadline is not None and time.perf_counter() > deadline:
                break
            outcomes = StepOutcomes(inner, cfg.draws, rng, cfg.knows_signals)
            uniform, chosen_value = outcomes.best_uniform()
            per_row, _ = outcomes.best_per_row(uniform, chosen_value)
            batch_value, row_value = outcomes.goodput(uniform, held_out=True), outcomes.goodput(per_row, held_out=True)
            labels = [inner.decisions[a].label for a in per_row]
            records.append({"batch": len(outcomes.rows), "batch_goodput": batch_value, "per_row_goodput": row_value,
                            "gain": row_value / batch_value, "batch_action": inner.decisions[uniform[0]].label,
                            "row_actions": labels})
        obs, _, terminated, truncated, _ = env.step(policy.act(obs))
        done = terminated or truncated
        step += 1
    return records


def summarize(by_workload: dict[str, list[dict]]) -> dict:
    gains = [r["gain"] for rows in by_workload.values() for r in rows]
    return {"per_row_x_batch_goodput_mean": round(float(np.mean(gains)), 4) if gains else None,
            "per_row_x_batch_goodput_by_workload": {w: round(float(np.mean([r["gain"] for r in rows])), 4)
                                                    for w, rows in by_workload.items() if rows},
            "share_steps_gain_over_5pct": round(float(np.mean([g > 1.05 for g in gains])), 4) if gains else None,
            "num_steps": len(gains)}


def by_batch(rows: list[dict]) -> dict[str, float]:
    buckets: dict[str, list[float]] = {}
    for r in rows:
        size = r["batch"]
        key = "1" if size == 1 else "2-4" if size <= 4 else "5-8" if size <= 8 else "9+"
        buckets.setdefault(key, []).append(r["gain"])
    return {k: round(float(np.mean(v)), 4) for k, v in sorted(buckets.items())}


def top_shares(counts: Counter, n: int = 3) -> str:
    total = sum(counts.values())
    return ", ".join(f"{label} {count / total:.0%}" for label, count in counts.most_common(n))


def render(data: dict) -> str:
    s = data["summary"]
    method = (f"`{data['command']}` ({data['seconds']:.0f} s). At sampled steps of cost-model episodes in the "
              "simulator, every row's outcome under every action is drawn from the simulator's acceptance "
              "models given its category and this step's draft signals; the best single action for the batch "
              "and a per-row assignment (coordinate ascent) are chosen on half of the draws and scored on the "
              "other half, both charged the simulator's clock for the mixed step. See agents/row_routing_bound.py.")
    header = ("| workload | steps | per-row / batch goodput | by batch size | steps with > 5% gain | "
              "batch actions | per-row actions |")
    lines = ["# Per-row routing: the most it could add over one decision per batch", "", method, "",
             f"Choosing {'with' if data['config']['knows_signals'] else 'without'} the rows' draft signals.", "",
             header, "|---|---|---|---|---|---|---|"]
    for w, rows in data["steps"].items():
        if rows:
            share = np.mean([r["gain"] > 1.05 for r in rows])
            batch = Counter(r["batch_action"] for r in rows)
            per_row = Counter(a for r in rows for a in r["row_actions"])
            lines.append(f"| {w} | {len(rows)} | {np.mean([r['gain'] for r in rows]):.4f} | "
                         f"{by_batch(rows)} | {share:.1%} | {top_shares(batch)} | {top_shares(per_row)} |")
    lines += ["", (f"All steps: per-row / batch {s['per_row_x_batch_goodput_mean']}, "
                   f"share of steps gaining > 5%: {s['share_steps_gain_over_5pct']}.")]
    return "\n".join(lines)


def main(cfg: BoundConfig) -> dict:
    import gymnasium

    import env  # noqa: F401  (registers SpecRoute-v0)
    began = time.perf_counter()
    deadline = began + 60 * cfg.max_minutes if cfg.max_minutes else None
    kwargs = sim_env_kwargs()
    workloads = evaluation_workloads(kwargs, cfg.num_requests)
    unknown = [w for w in cfg.workloads if w not in workloads]
    if unknown:
        raise ValueError(f"unknown workloads {unknown}; known: {', '.join(workloads)}")
    environment = gymnasium.make("SpecRoute-v0", **kwargs)
    rng = np.random.default_rng(0)
    steps: dict[str, list[dict]] = {}
    for w in cfg.workloads:
        steps[w] = []
        for seed in range(cfg.seeds):
            steps[w] += sample_workload(environment, workloads[w], cfg, 30_000 + seed, rng, deadline)
        gains = [r["gain"] for r in steps[w]]
        print(f"[{time.perf_counter() - began:6.0f} s] {w:<22} {len(gains):3d} steps  per-row/batch "
              f"{np.mean(gains) if gains else float('nan'):.4f}", flush=True)
    environment.close()
    data = {"command": " ".join(["python -m agents.row_routing_bound", *sys.argv[1:]]), "config": asdict(cfg),
            "seconds": time.perf_counter() - began, "steps": steps, "summary": summarize(steps)}
    publish_results(cfg.output_name, data, render(data), cfg.output_dir)
    return data


if __name__ == "__main__":
    from cli.missing_data import exit_on_missing_data
    with exit_on_missing_data():
        main(parse_dataclass(BoundConfig))
