"""`SpecRoute-v0`: route each engine step to a (chain, K) under a serving workload."""

from __future__ import annotations

import copy
import dataclasses

import gymnasium
import numpy as np
from gymnasium import spaces

from env.config import EnvConfig, EnvConfigError
from env.episode import Episode
from env.workloads import build_window, resolve_workload
from router.load_stats import LoadStats
from router.observation import ObservationSpec
from router.observation_builder import ObservationBuilder


class SpecRouteEnv(gymnasium.Env):
    """## Description

    An LLM server decodes a workload (prompts arriving over time) with speculative decoding.
    Before every engine step the agent picks which drafter chain runs and how many tokens its
    first level drafts. Drafting more pays when drafts are accepted and the batch is small;
    under load the verifier becomes compute-bound and plain decoding wins. The same scheduler,
    acceptance trackers and observation code run on two backends: `real` (the engine on wall
    clock) and `sim` (virtual clock; step latency from a profile, acceptance drawn from models
    fitted on real runs by `python -m env.calibrate`).

    ## Action space

    `Discrete(len(actions))`: index into the configured (chain, K) list. The default list
    (`env.config.DEFAULT_ACTIONS`, 18 actions) is `plain, ngram>target@2/4/8,
    suffix>target@2/4/8, int4>target@2/3/5, ngram>int4>target@4, draft>target@2/4,
    ngram>draft>target@4`, int4>target and draft>target at K 8 with thresholds 0.5 and 0.8
    (`env.config.STOP_ACTIONS`); K = 0 (plain) runs the target alone; `int4` is the target's int4
    copy (`quantized_levels`), the draft's chains need the distilled draft (`checkpoints/draft`).
    A label may end in a draft-stop threshold, `int4>target@k8p0.5`: the first (model) level stops
    drafting at the first token it gives a top-1 probability below 0.5 (`Decision.p_min`).
    An index outside the space raises `gymnasium.error.InvalidAction`.

    ## Observation space

    `Box(float32)` with a versioned spec (`env.unwrapped.obs_spec`, version
    `specroute-obs-v4`); values are clipped into [min, max]. It shows the batch the next step runs
    (waiting requests that fit are admitted first), as a served router's view does. Loads, times
    and costs are relative to this machine and these limits, so one policy reads a flat (Intel
    AMX) and a steep (Zen 3 fp32) cost curve on the same scale: "plain step" is the target's
    one-token forward at the current batch and mean context in the engine's latency profile (the
    simulator's episode curve, the server's measured profile). With the default actions:

    | index | name | min | max |
    |---|---|---|---|
    | 0 | batch_occupancy: running requests / max_num_seqs | 0 | 1 |
    | 1 | queue_batches: waiting requests / max_num_seqs (clipped) | 0 | 1 |
    | 2 | arrivals_per_step: arrivals/s (EMA) x the plain step | 0 | 1 |
    | 3 | context_mean: mean prompt + output tokens, running rows / max_model_len | 0 | 1 |
    | 4 | context_max: largest prompt + output tokens, running rows / max_model_len | 0 | 1 |
    | 5 | step_x_plain: last step's duration / the plain step | 0 | 8 |
    | 6 | tpot_slack: 1 - recent time per output token / TPOT SLO | -3 | 1 |
    | 7 | ttft_slack: 1 - recent time to first token / TTFT SLO | -3 | 1 |
    | 8 | oldest_wait: age of the oldest waiting request / TTFT SLO | 0 | 4 |
    | 9 | verify_cost[2]: the target's forward of 2 drafts + 1 per row / the plain step | 0 | 8 |
    | 10 | verify_cost[3]: the same for 3 drafts | 0 | 8 |
    | 11 | verify_cost[4]: the same for 4 drafts | 0 | 8 |
    | 12 | verify_cost[5]: the same for 5 drafts | 0 | 8 |
    | 13 | verify_cost[8]: the same for 8 drafts | 0 | 8 |
    | 14 | draft_cost[int4]: the int4 copy's one-token forward / the plain step | 0 | 8 |
    | 15 | draft_cost[draft]: the same for the distilled draft | 0 | 8 |
    | 16 | acceptance[ngram>target]: acceptance EMA | 0 | 1 |
    | 17 | acceptance[suffix>target]: acceptance EMA | 0 | 1 |
    | 18 | acceptance[int4>target]: acceptance EMA | 0 | 1 |
    | 19 | acceptance[ngram>int4]: acceptance EMA | 0 | 1 |
    | 20 | acceptance[draft>target]: acceptance EMA | 0 | 1 |
    | 21 | acceptance[ngram>draft]: acceptance EMA | 0 | 1 |
    | 22 | signal_mean[ngram]: mean over rows of this step's n-gram draft signal / 3 | 0 | 1 |
    | 23 | signal_max[ngram]: the largest row's | 0 | 1 |
    | 24 | signal_mean[suffix]: the same for suffix drafting | 0 | 1 |
    | 25 | signal_max[suffix]: the largest row's | 0 | 1 |
    | 26 | catch_up[int4]: log1p(tokens the int4 copy's cache lacks over the rows / their remaining output tokens, at most 256 each) | 0 | log1p(4096) |
    | 27 | catch_up[draft]: the same for the distilled draft | 0 | log1p(4096) |
    | 28..45 | last_action[label]: one-hot of the previous action | 0 | 1 |

    One verify-cost entry per distinct K of the actions, one draft-cost entry per model level
    below the target, one acceptance entry per (drafter > verifier) pair the actions use, two
    signal entries per model-free drafter that starts a chain, one catch-up entry per model
    level below the target (what the cost model charges before bringing a level in: a new
    prompt's prefill there, or the tokens it missed while it sat out), one last-action entry per
    action; `obs_spec.table()` prints the table for any configuration. A draft signal
    (`ModelFreeDrafter.signal`, 0..3) says before the step how promising the drafter's proposal
    is: the matched n-gram's length, the suffix drafter's confident proposal length; the
    simulator draws it from its fitted distribution and then the step's proposal given it.

    ## Rewards

    Committed tokens per second of the step (tokens committed by all rows / step latency),
    minus `slo_penalty` for every request finishing in the step that missed its TTFT SLO or
    its mean-TPOT SLO.

    ## Starting state

    `reset` draws one window of the workload from `np_random` (prompts, arrival times, output
    lengths) and admits the requests that arrive at time 0.

    ## Episode end

    Terminated when every request of the window has arrived and finished. Truncated after
    `max_steps` steps. Idle time between arrivals is skipped.

    ## Arguments

    `gymnasium.make("SpecRoute-v0", backend="sim" | "real", workload=..., **fields)` with the
    fields of `env.EnvConfig` (actions, max_num_seqs, max_model_len, slo_tpot_s, slo_ttft_s,
    slo_penalty, max_steps, acceptance, ...) and of its backends' configs, flat (the simulator's
    profile, randomize_latency, ...; the real engine's model, draft, engine_factory, ...) or
    nested (`sim=env.SimBackendConfig(...)`, `real=env.RealBackendConfig(...)`), or
    `config=EnvConfig(...)`. Bad values raise `env.EnvConfigError` (a `gymnasium.error.Error`
    and a `ValueError`). `reset(options={"workload": ...})` switches the workload for that
    episode and the next ones (load sweeps). The sim backend loads no model; the real one
    marks its spec nondeterministic (wall-clock latencies).

    ## Cloning (sim only)

    `clone_state()` / `restore_state(state)` copy the whole simulator (requests, clock,
    trackers, RNG) for look-ahead baselines such as the hindsight oracle.

    ## Version History

    * v0: initial version (observation spec `specroute-obs-v1`); the spec `specroute-obs-v2` adds the
      per-step draft signals (`signal_mean[drafter]`, `signal_max[drafter]`); `specroute-obs-v3`
      adds each model level's catch-up (`catch_up[level]`) and shows the batch after admission;
      `specroute-obs-v4` makes loads, times and costs relative to the machine (occupancy, queue in
      batches, arrivals per plain step, latencies and each level's forward / the plain step).
    """

    metadata = {"render_modes": []}
    _spec = None

    def __init__(self, backend: str = "sim", workload="sharegpt", render_mode: str | None = None,
                 config: EnvConfig | None = None, **fields):
        if render_mode is not None:
            raise EnvConfigError(f"SpecRoute-v0 does not render; render_mode must be None, got {render_mode!r}")
        if config is None:
            config = EnvConfig.from_kwargs(backend=backend, workload=workload, **fields)
        elif fields:
            raise EnvConfigError("pass either config=EnvConfig(...) or keyword fields, not both")
        self.config = config
        self.decisions = config.decisions
        if config.backend == "sim":
            from env.sim_backend import SimBackend
            self.backend = SimBackend(config)
        else:
            from env.real_backend import RealBackend
            self.backend = RealBackend(config)
        self.obs_spec: ObservationSpec = config.observation_spec()
        self._builder = ObservationBuilder(self.obs_spec)
        self.observation_space = spaces.Box(self.obs_spec.low, self.obs_spec.high, dtype=np.float32)
        self.action_space = spaces.Discrete(len(self.decisions))
        self.render_mode = None
        self._episode: Episode | None = None
        self._obs: np.ndarray | None = None

    # ---- gymnasium API --------------------------------------------------------------------
    @property
    def spec(self):
        return self._spec

    @spec.setter
    def spec(self, value) -> None:
        if value is not None and self.config.backend == "real" and not value.nondeterministic:
            value = dataclasses.replace(value, nondeterministic=True)
        self._spec = value

    @property
    def action_labels(self) -> list[str]:
        return self.config.action_labels

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        unknown = sorted(set(options) - {"workload"})
        if unknown:
            raise EnvConfigError(f"unknown reset options {unknown}; known: ['workload']")
        if "workload" in options:
            try:
                workload = resolve_workload(options["workload"])
            except (ValueError, TypeError) as exc:
                raise EnvConfigError(str(exc)) from None
            self.config = dataclasses.replace(self.config, workload=workload)
        window = build_window(self.config.workload, self.np_random)
        self.backend.reset(int(self.np_random.integers(0, 2 ** 63 - 1)))
        stats = LoadStats(self.config.slo_tpot_s, self.config.slo_ttft_s)
        workload = self.config.workload
        think_rng = np.random.default_rng(int(self.np_random.integers(0, 2 ** 63 - 1))) \
            if workload.arrival == "closed" else None
        self._episode = Episode(window, stats, self.config.slo_penalty, think_s=workload.think_s, rng=think_rng)
        self._episode.start(self.backend)
        self._obs = self._episode.observe(self.backend, self._builder)
        return self._obs.copy(), {"time_s": self._episode.time, "num_requests": len(window)}

    def _is_index(self, action) -> bool:
        return isinstance(action, (int, np.integer)) and not isinstance(action, bool) \
            and 0 <= action < self.action_space.n

    def step(self, action):
        """`action`: an index of the action list for every row, or (per-row routing, what a
        served router may do) a sequence of indices, one per row of `batch_view()`, in its order."""
        if self._episode is None:
            raise gymnasium.error.ResetNeeded("call reset() before step()")
        rows = None
        if isinstance(action, (list, tuple)) and action and all(self._is_index(a) for a in action):
            rows = [int(a) for a in action]
            num_rows = len(self.backend.scheduler.admit())     # the rows the step runs, as batch_view admits
            if len(rows) != num_rows:
                raise gymnasium.error.InvalidAction(f"{len(rows)} per-row actions for a batch of {num_rows} rows")
            action = max(set(rows), key=rows.count)          # what the observation's last_action shows
        elif not self._is_index(action) and not self.action_space.contains(action):
            raise gymnasium.error.InvalidAction(
                f"action {action!r} is not in {self.action_space} (nor one index per row); actions: "
                + ", ".join(f"{i}={label}" for i, label in enumerate(self.action_labels)))
        action = int(action)
        episode = self._episode
        if episode.is_done:
            info = {"time_s": episode.time, "num_committed": 0, "latency_s": 0.0,
                    "num_violations": 0, "num_finished": 0, "action": self.action_labels[action]}
            return self._obs.copy(), 0.0, True, False, info
        decisions = self.decisions[action] if rows is None else [self.decisions[a] for a in rows]
        outcome = episode.step(self.backend, decisions, action)
        self._obs = episode.observe(self.backend, self._builder)
        terminated = episode.is_done
        truncated = not terminated and episode.num_steps >= self.config.max_steps
        info = {"time_s": episode.time, "num_committed": outcome.num_committed,
                "latency_s": outcome.latency_s, "num_violations": outcome.num_violations,
                "num_finished": outcome.num_finished, "action": self.action_labels[action]}
        return self._obs.copy(), outcome.reward, terminated, truncated, info

    def close(self) -> None:
        backend = getattr(self, "backend", None)
        if backend is not None:
            backend.close()

    def batch_view(self):
        """What a served router sees before this step (`engine.batch_view.BatchView`): the rows
        the step will run, their own acceptance estimates, the queue. Admits what fits, as the
        step does first anyway."""
        if self._episode is None:
            raise gymnasium.error.ResetNeeded("call reset() before batch_view()")
        return self.backend.engine.admit()

    # ---- look-ahead (sim only) --------------------------------------------------------------
    def clone_state(self):
        """A deep copy of the episode and the simulator (requests, clock, trackers, RNGs)."""
        if self.config.backend != "sim":
            raise EnvConfigError("clone_state needs the sim backend: the real engine's clock cannot be copied")
        memo = self._shared_memo(self._episode)
        return copy.deepcopy((self.backend.state(), self._episode, self._obs, self._np_random), memo)

    def _shared_memo(self, episode: Episode | None) -> dict:
        """deepcopy memo of what clones share instead of copying, as none of it changes during an
        episode: the simulator's fixed inputs, the episode's window and every request's prompt."""
        shared = list(self.backend.shared_objects())
        if episode is not None:
            shared.append(episode.window)
            shared += [request.prompt_token_ids for request in episode.requests.values()]
        return {id(obj): obj for obj in shared}

    def restore_state(self, state) -> None:
        """Go back to a state from `clone_state` (the state itself stays reusable)."""
        if self.config.backend != "sim":
            raise EnvConfigError("restore_state needs the sim backend")
        memo = self._shared_memo(state[1])
        backend_state, self._episode, self._obs, self._np_random = copy.deepcopy(state, memo)
        self.backend.load_state(backend_state)
