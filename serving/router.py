"""The guarded router: the learned policy when it is safe to trust, the fallback (cost model) otherwise.

`decide(view)` implements the engine's router protocol (engine/batch_view.py). Each step it builds the observation
(the environment's own builder, via `ServingObserver`), checks it lies in the range the policy
was trained on, runs the policy, and checks the output is finite and came in time. Any failed
check hands this step to the fallback. A policy that could not be loaded (missing, corrupt,
another spec) hands every step to it. Each cause is logged once at WARNING and then only
counted (`specroute:router_fallbacks_total{cause}`).

Every decision that maps to an action of the policy's list is written to the decision log
(obs, action, propensity, reward, next obs, policy version) once its reward is known, that is
at the next decision: the format `agents.ope` reads.
"""

from __future__ import annotations

import logging
import time
import uuid

import numpy as np

from engine import Decision
from engine.batch_view import BatchView
from engine.decision import per_row
from router.decision_log import DecisionLogRow

logger = logging.getLogger("serving")

LEARNED, FALLBACK = "learned", "fallback"
CAUSES = ("checkpoint_missing", "checkpoint_corrupt", "checkpoint_spec", "checkpoint_hash", "checkpoint_nan",
          "observation_error", "out_of_range", "nan_output", "slow_decision", "policy_error")


class GuardedRouter:
    """Args:
        fallback: a router (`decide(view) -> list[Decision]`), the cost model in serving.
        learned: a loaded `LearnedPolicy`, or None when loading failed (`load_error` says why).
        observer: builds observations and rewards (`ServingObserver`); required with `learned`
            or `decision_log`.
        actions: the Discrete action list (the policy's manifest; without a policy, the
            environment's) that decision-log rows index.
        max_decision_s: a learned decision slower than this is replaced by the fallback's.
        range_margin: how far (x the training range's width) a feature may stray before the
            observation counts as out of range.
        metrics: `ServingMetrics` (decisions and fallbacks by source and cause), optional.
        decision_log: anything with `write(row)` and `close()` (a `BackgroundDecisionLog` in serving), optional.
        mode: the server's --router setting (learned, cost_model or a fixed chain), for `status()`.
    """

    def __init__(self, fallback, learned=None, *, load_error: Exception | None = None, observer=None,
                 actions: list[Decision] | None = None, max_decision_s: float = 0.005, range_margin: float = 0.0,
                 metrics=None, decision_log=None, policy_path: str = "",
                 mode: str = "learned"):
        if (learned is not None or decision_log is not None) and observer is None:
            raise ValueError("a learned policy or a decision log needs an observer")
        self.fallback = fallback
        self.learned = learned
        self.observer = observer
        self.actions = list(actions if actions is not None else (learned.decisions() if learned else []))
        self.max_decision_s = max_decision_s
        self.range_margin = range_margin
        self.metrics = metrics
        self.decision_log = decision_log
        self.policy_path = policy_path
        self.mode = mode
        self.load_error = load_error
        self.counts = {LEARNED: 0, FALLBACK: 0}
        self.fallback_counts: dict[str, int] = {}
        self._warned: set[str] = set()
        self._last_action: int | None = None
        self._pending: tuple[np.ndarray, int, str, int] | None = None    # obs, action, version, step count
        self._pending_source = FALLBACK
        self._episode = uuid.uuid4().hex[:12]
        self._num_logged = 0
        if learned is None and load_error is not None:     # say so at start-up, not at the first request
            self._fall_back(_load_cause(load_error), str(load_error), count=False)

    # ---- the router protocol ----------------------------------------------------------------
    def decide(self, view: BatchView) -> list[Decision]:
        start = time.perf_counter()
        obs = None
        if self.observer is not None:
            try:
                obs = self.observer.observation(view, self._last_action)
            except Exception as exc:
                self._fall_back("observation_error", repr(exc))
        decisions, source = None, FALLBACK
        if self.learned is None and self.load_error is not None:
            self._fall_back(_load_cause(self.load_error), str(self.load_error))
        elif self.learned is not None and obs is not None:
            decision = self._learned_decision(obs, start)
            if decision is not None:
                decisions, source = [decision] * view.batch_size, LEARNED
        if decisions is None:
            decisions = per_row(self.fallback.decide(view), view.batch_size)
        seconds = time.perf_counter() - start
        self.counts[source] += 1
        single = decisions[0] if decisions and all(d == decisions[0] for d in decisions) else None
        if self.metrics is not None:
            for d in [single] if single is not None else decisions:
                self.metrics.observe_decision(source, d.chain_label, d.k, seconds)
        action = self.actions.index(single) if single is not None and single in self.actions else None
        self._log(obs, action, source)
        self._last_action = action
        return decisions

    def observe_feedback(self, feedback) -> None:
        """Pass the engine's step feedback (`engine.batch_view.StepFeedback`) to the fallback."""
        observe = getattr(self.fallback, "observe_feedback", None)
        if observe is not None:
            observe(feedback)

    def new_episode(self) -> None:
        """Start again from no load and no previous action, as a freshly started server would
        (benchmarks that run one router over several load levels call this between them)."""
        if self.observer is not None:
            self.observer.reset()
        self._last_action = None
        self._pending = None

    def _learned_decision(self, obs: np.ndarray, start: float) -> Decision | None:
        bad = self.learned.out_of_range(obs, self.range_margin)
        if bad:
            self._fall_back("out_of_range", f"features outside the training range: {', '.join(bad[:4])}")
            return None
        try:
            with np.errstate(over="ignore", invalid="ignore"):     # overflow is caught below as non-finite
                values = np.asarray(self.learned.action_values(obs), dtype=np.float64)
        except Exception as exc:
            self._fall_back("policy_error", repr(exc))
            return None
        if not np.isfinite(values).all():
            self._fall_back("nan_output", "the policy produced NaN or infinite action values")
            return None
        elapsed = time.perf_counter() - start
        if elapsed > self.max_decision_s:
            self._fall_back("slow_decision", f"{elapsed * 1e3:.2f} ms > {self.max_decision_s * 1e3:.2f} ms")
            return None
        return self.actions[int(np.argmax(values))]

    def _fall_back(self, cause: str, detail: str, count: bool = True) -> None:
        if count:
            self.fallback_counts[cause] = self.fallback_counts.get(cause, 0) + 1
            if self.metrics is not None:
                self.metrics.observe_fallback(cause)
        if cause not in self._warned:
            self._warned.add(cause)
            logger.warning("router: falling back to %s (%s: %s); further occurrences are only counted",
                           type(self.fallback).__name__, cause, detail)

    # ---- decision log -------------------------------------------------------------------------
    @property
    def policy_version(self) -> str:
        if self.learned is not None:
            return f"{self.learned.name}:{self.learned.manifest.sha256[:12]}"
        return f"fallback:{type(self.fallback).__name__}"

    def _log(self, obs: np.ndarray | None, action: int | None, source: str) -> None:
        if self.decision_log is None or self.observer is None:
            return
        steps = self.observer.num_steps
        if self._pending is not None and obs is not None:
            prev_obs, prev_action, version, prev_steps = self._pending
            if steps == prev_steps + 1:         # exactly the step that decision drove has been observed
                self.decision_log.write(DecisionLogRow(
                    obs=prev_obs.tolist(), action=prev_action, propensity=1.0, reward=self.observer.last_reward,
                    next_obs=obs.tolist(), done=False, policy_version=version, episode=self._episode,
                    step=self._num_logged, obs_spec_version=self.observer.spec_version,
                    extra={"source": self._pending_source}))
                self._num_logged += 1
        self._pending = None
        if obs is not None and action is not None:
            version = self.policy_version if source == LEARNED else f"fallback:{type(self.fallback).__name__}"
            self._pending = (obs.copy(), action, version, steps)
            self._pending_source = source

    # ---- status -------------------------------------------------------------------------------
    @property
    def source(self) -> str:
        return LEARNED if self.learned is not None else FALLBACK

    def status(self) -> dict:
        return {"mode": self.mode, "source": self.source, "policy": self.policy_path, "policy_version": self.policy_version,
                "fallback": type(self.fallback).__name__,
                "load_error": None if self.load_error is None else f"{type(self.load_error).__name__}: {self.load_error}",
                "decisions": dict(self.counts), "fallbacks": dict(self.fallback_counts),
                "candidates": self.candidates}

    @property
    def candidates(self) -> list[str]:
        """Every decision the fallback may pick (the cost model's list; a fixed router's one), as labels:
        what a benchmark runs as static baselines."""
        cost_model = getattr(self.fallback, "cost_model", None)
        decisions = cost_model.decisions if cost_model is not None else [getattr(self.fallback, "decision", None)]
        return [d.label for d in decisions if d is not None]

    def close(self) -> None:
        if self.decision_log is not None:
            self.decision_log.close()


def _load_cause(error: Exception) -> str:
    """The fallback cause for a policy that failed to load (`router.checkpoint.CheckpointError.cause`)."""
    return getattr(error, "cause", "checkpoint_corrupt")
