"""Running the chains benchmark's columns on one engine: per-column state, timed routing,
batch-1 runs and closed-loop runs under load (bench/bench_chains.py drives them)."""

from __future__ import annotations

import copy
import time
from collections import Counter, deque
from dataclasses import dataclass

from bench.chains_report import COST_MODEL, LEARNED, PLAIN
from bench.common import BenchPrompt
from engine import Decision, Engine, FinishReason, SamplingParams, StaticRouter
from engine.cost_model import decision_grid
from engine.ladder import ladder_chains


@dataclass(frozen=True)
class Column:
    """One configuration: a fixed decision (plain or a static chain at K), or a router (by name)."""

    name: str
    decision: Decision | None = None          # None: the router named `name` (cost-model or learned)

    @property
    def is_static(self) -> bool:
        return self.decision is not None and not self.decision.is_plain

    @property
    def chain(self) -> str:
        return ">".join(self.decision.chain) if self.is_static else self.name


def grid_columns(model_levels: list[str], ks: list[int], routers: tuple[str, ...] = (COST_MODEL,)) -> list[Column]:
    """Plain, every (chain, K) the ladder of `model_levels` offers (engine/ladder.py), then the routers."""
    return [Column(d.label, d) for d in decision_grid(ladder_chains(model_levels), ks)] + [Column(r) for r in routers]


class TimedRouter:
    """Wraps a router: adds up the seconds spent deciding (the routing overhead) and what it chose,
    and tells the router's observer (the served learned policy's `ServingObserver`) what the
    server's engine loop would: arrivals, steps and removals."""

    def __init__(self, router):
        self.router = router
        self.observer = getattr(router, "observer", None)
        self.decide_s = 0.0
        self.choices: Counter[str] = Counter()

    def observe_added(self, engine: Engine, request_id: str) -> None:
        if self.observer is not None:
            self.observer.observe_added(engine.scheduler.requests[request_id])

    def observe_step(self, engine: Engine, outputs: list) -> None:
        if self.observer is not None:
            self.observer.observe_step(engine, outputs)

    def observe_feedback(self, feedback) -> None:
        """The engine's step feedback goes to the wrapped router (the cost model corrects itself online)."""
        if (observe := getattr(self.router, "observe_feedback", None)) is not None:
            observe(feedback)

    def decide(self, view):
        start = time.perf_counter()
        decisions = self.router.decide(view)
        self.decide_s += time.perf_counter() - start
        # a step that runs one decision for every row counts once, a mixed one once per row
        for d in decisions[:1] if len(set(decisions)) == 1 else decisions:
            self.choices[d.label] += 1
        return decisions


class ColumnSwitch:
    """Per column, its own drafters (suffix history) and acceptance trackers on one shared engine.

    Args:
        routers: the router of each router column, by column name.
        reads_signals: the router columns whose router reads per-step draft signals (the learned
            policy): the engine computes them only while such a column runs, as the server does.
    """

    def __init__(self, engine: Engine, routers: dict[str, object], reads_signals: frozenset[str] = frozenset()):
        self.engine = engine
        self.routers = routers
        self.reads_signals = reads_signals
        self._blank = copy.deepcopy(engine.adaptive_state())
        self._states: dict[str, tuple] = {}

    def activate(self, column: Column) -> TimedRouter:
        """Install `column`'s state and a fresh timed router on the engine; return the router."""
        state = self._states.get(column.name)
        if state is None:
            state = self._states[column.name] = copy.deepcopy(self._blank)
        self.engine.load_adaptive_state(state)
        router = TimedRouter(self.routers[column.name] if column.decision is None else StaticRouter(column.decision))
        self.engine.set_router(router)
        self.engine.show_signals(column.name in self.reads_signals)
        return router

    def saved(self, column: Column) -> tuple:
        """A copy of `column`'s state, to run it again from the same point (a repeat)."""
        return copy.deepcopy(self._states[column.name])

    def restore(self, column: Column, state: tuple) -> TimedRouter:
        """Activate `column` from a copy of `state` (see `saved`)."""
        self._states[column.name] = copy.deepcopy(state)
        return self.activate(column)

    def forget(self) -> None:
        """Every column starts again from empty history and prior acceptance, and a router's
        observer from no load (a new episode)."""
        self._states.clear()
        for router in self.routers.values():
            if hasattr(router, "new_episode"):
                router.new_episode()


def run_one(engine: Engine, ids: list[int], max_new_tokens: int,
            router: TimedRouter | None = None) -> tuple[list[int], float, int, float]:
    """One request to completion alone: (tokens, seconds, steps, seconds inside engine.step).
    `router` (the engine's) is told of the request and each step, as the server's loop would."""
    start = time.perf_counter()
    request_id = engine.add_request(ids, SamplingParams(max_tokens=max_new_tokens))
    if router is not None:
        router.observe_added(engine, request_id)
    tokens, num_steps, step_s = [], 0, 0.0
    while engine.has_unfinished:
        outputs = engine.step()
        if router is not None:
            router.observe_step(engine, outputs)
        for output in outputs:
            if output.finished:
                if output.finish_reason is FinishReason.ERROR:
                    raise RuntimeError(f"request failed: {output.error}")
                tokens = output.output_token_ids
        num_steps += 1
        step_s += engine.last_step.latency_s
    return tokens, time.perf_counter() - start, num_steps, step_s


REPEATED = (PLAIN, COST_MODEL, LEARNED)


def repeat_passes(columns: list[Column], repeats: int) -> list[Column]:
    """The runs after a first pass over `columns`: plain and the routers `repeats - 1` more
    times each, alternating which goes first, so a slow spell of the machine hits them alike."""
    repeated = [c for c in columns if c.name in REPEATED]
    return [c for r in range(1, repeats) for c in repeated[::(-1) ** r]]


def median_run(runs: list, seconds) -> tuple[object, list[float]]:
    """The run of median `seconds(run)` (the lower middle of an even count) and every run's seconds."""
    times = [seconds(run) for run in runs]
    order = sorted(range(len(runs)), key=times.__getitem__)
    return runs[order[(len(runs) - 1) // 2]], times


def run_batch1(switch: ColumnSwitch, columns: list[Column], prompts: list[tuple[BenchPrompt, list[int]]],
               max_new_tokens: int, deadline: float | None, repeats: int = 1,
               baselines: dict | None = None) -> list[dict]:
    """Every column on every prompt, back to back in a rotated order; outputs compared with plain.
    `baselines`: other engines by name (llama.cpp: `(ids, max new tokens) -> Generation`,
    bench/engine_columns.py), run once per prompt in the same rotation; their records say
    `is_baseline` (llama.cpp is not expected to match our outputs: other kernels, other rounding).

    Plain and the routers, the ratios the targets read, run `repeats` times, each repeat from
    the column's state before the prompt (a repeat must not find the prompt in the suffix
    drafter's history or the trackers), alternating which goes first; their record is the
    median run. One run of the same forwards varies by +-15% on this machine (bench/results/chains.md)."""
    records = []
    baselines = baselines or {}
    order: list = [*columns, *baselines]
    for index, (prompt, ids) in enumerate(prompts):
        if deadline is not None and time.perf_counter() > deadline:
            print(f"time limit reached after {index} of {len(prompts)} prompts", flush=True)
            break
        shift = index % len(order)
        runs: dict[str, list] = {}
        before: dict[str, tuple] = {}
        outside: dict[str, object] = {}
        for column in order[shift:] + order[:shift]:
            if isinstance(column, str):             # another engine (llama.cpp), not ours
                outside[column] = baselines[column](ids, max_new_tokens)
                continue
            router = switch.activate(column)
            if column.name in REPEATED:
                before[column.name] = switch.saved(column)
            runs[column.name] = [(*run_one(switch.engine, ids, max_new_tokens, router), router)]
        for column in repeat_passes(columns, repeats):
            router = switch.restore(column, before[column.name])
            runs[column.name].append((*run_one(switch.engine, ids, max_new_tokens, router), router))
        reference = runs[PLAIN][0][0]
        for column in columns:
            (tokens, elapsed, steps, step_s, router), times = median_run(runs[column.name], lambda run: run[1])
            identical = all(run[0] == reference for run in runs[column.name])
            records.append(dict(config=column.name, question_id=prompt.question_id, category=prompt.category,
                                num_prompt_tokens=len(ids), num_tokens=len(tokens), elapsed_s=elapsed,
                                elapsed_runs_s=times, num_steps=steps, step_s=step_s, decide_s=router.decide_s,
                                choices=dict(router.choices), is_identical_to_plain=identical))
            print(f"[{index + 1}/{len(prompts)} {prompt.category:<14}] {column.name:<24} {len(tokens):>4} tok "
                  f"{len(tokens) / elapsed:6.2f} tok/s{' (median of ' + str(len(times)) + ')' if len(times) > 1 else ''} "
                  f"{'' if identical else 'DIFFERS FROM PLAIN'}", flush=True)
        for name, generation in outside.items():
            records.append(dict(config=name, question_id=prompt.question_id, category=prompt.category,
                                num_prompt_tokens=len(ids), num_tokens=len(generation.tokens),
                                elapsed_s=generation.elapsed_s, elapsed_runs_s=[generation.elapsed_s],
                                num_steps=generation.num_steps, step_s=generation.elapsed_s, decide_s=0.0, choices={},
                                is_identical_to_plain=generation.tokens == reference, is_baseline=True))
            print(f"[{index + 1}/{len(prompts)} {prompt.category:<14}] {name:<24} {len(generation.tokens):>4} tok "
                  f"{len(generation.tokens) / generation.elapsed_s:6.2f} tok/s", flush=True)
    return records


def run_load(switch: ColumnSwitch, column: Column, requests: list[list[int]], concurrency: int,
             max_new_tokens: int) -> tuple[dict, list[list[int]]]:
    """Closed loop: keep `concurrency` requests in flight until every one of `requests` completed.
    Returns the figures and each request's output tokens (in request order)."""
    engine = switch.engine
    switch.forget()
    router = switch.activate(column)
    pending = deque(enumerate(requests))
    in_flight: dict[str, int] = {}
    submitted, first_token, finished = {}, {}, {}
    outputs: list[list[int]] = [[] for _ in requests]
    num_steps, step_s, batch_rows = 0, 0.0, 0
    start = time.perf_counter()
    while pending or in_flight:
        while pending and len(in_flight) < concurrency:
            index, ids = pending.popleft()
            request_id = engine.add_request(ids, SamplingParams(max_tokens=max_new_tokens))
            router.observe_added(engine, request_id)
            in_flight[request_id] = index
            submitted[index] = time.perf_counter()
        step_outputs = engine.step()
        router.observe_step(engine, step_outputs)
        now = time.perf_counter()
        num_steps += 1
        step_s += engine.last_step.latency_s
        batch_rows += engine.last_step.batch_size
        for output in step_outputs:
            index = in_flight[output.request_id]
            if output.new_token_ids and index not in first_token:
                first_token[index] = now
            if output.finished:
                if output.finish_reason is FinishReason.ERROR:
                    raise RuntimeError(f"request failed: {output.error}")
                finished[index] = now
                outputs[index] = output.output_token_ids
                del in_flight[output.request_id]
    elapsed = time.perf_counter() - start
    tpots = [(finished[i] - first_token[i]) / (len(out) - 1) for i, out in enumerate(outputs) if len(out) > 1]
    ttfts = [first_token[i] - submitted[i] for i in first_token]
    num_tokens = sum(len(out) for out in outputs)
    return dict(config=column.name, concurrency=concurrency, num_requests=len(requests), num_tokens=num_tokens,
                elapsed_s=elapsed, tokens_per_s=num_tokens / elapsed,
                mean_tpot_ms=1000 * sum(tpots) / len(tpots) if tpots else None,
                mean_ttft_ms=1000 * sum(ttfts) / len(ttfts) if ttfts else None,
                num_steps=num_steps, mean_batch=batch_rows / num_steps if num_steps else 0.0,
                step_s=step_s, decide_s=router.decide_s, choices=dict(router.choices)), outputs


def load_column_set(columns: list[Column], records: list[dict], which: str) -> list[Column]:
    """'all', or plain + the routers + each chain at its fastest K on the batch-1 mix."""
    if which == "all" or not records:
        return columns
    speed = {}
    for column in columns:
        runs = [r for r in records if r["config"] == column.name]
        seconds = sum(r["elapsed_s"] for r in runs)
        speed[column.name] = sum(r["num_tokens"] for r in runs) / seconds if seconds else 0.0
    best: dict[str, Column] = {}
    for column in columns:
        if column.is_static and (column.chain not in best or speed[column.name] > speed[best[column.chain].name]):
            best[column.chain] = column
    chosen = {c.name for c in columns if not c.is_static} | {c.name for c in best.values()}
    # plain and the routers first: a --max-minutes cut then drops a static column, not a router
    return sorted((c for c in columns if c.name in chosen), key=lambda c: (c.name != PLAIN, c.is_static))
