"""Building the serving state: model, optional trained draft, engine, guarded router, metrics.

`build_state(config)` is what `python -m serving` runs; `state_for_engine(engine, ...)` wraps an
engine that already exists (tests use a tiny one) with the same router and observers.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import torch

from engine import TARGET, Decision, Engine, EngineConfig, StaticRouter
from engine.cost_model import CostModel, decision_grid
from engine.draft_stop import STOP_P_MINS
from engine.ladder import ladder_chains
from env.config import DEFAULT_ACTIONS, resolve_path
from env.sim_calibration import SimCalibration
from router.checkpoint import CheckpointError, CheckpointSpecMismatch, read_manifest
from router.config import RouterConfig
from router.cost_router import CostModelRouter
from router.learned_policy import LearnedPolicy
from router.load_stats import LoadStats
from router.observation import observation_spec_for
from router.online_correction import OnlineCorrectionConfig
from serving.app import ServingState
from serving.config import ROUTER_NAMES, ServerConfig
from serving.decision_log import BackgroundDecisionLog
from serving.engine_loop import EngineLoop
from serving.metrics import ServingMetrics
from serving.observation import ServingObserver
from serving.profile_source import load_profile
from serving.retry_after import RetryPromises
from serving.router import GuardedRouter
from serving.sampling_defaults import OPENAI_DEFAULTS, SamplingDefaults, resolve_sampling_defaults
from serving.spec_metrics import PerRequestSpecMetrics
from serving.wait_estimate import WaitEstimator

logger = logging.getLogger("serving")


def max_num_tokens(config: ServerConfig) -> int:
    """The KV cache's token capacity: every row of a full batch at the longest context."""
    return max(config.max_model_len * config.max_num_seqs, config.max_model_len)


def router_config(config: ServerConfig) -> RouterConfig:
    """The server's limits and SLOs as the router sees them; the other ranges and the SLO penalty
    keep RouterConfig's defaults, the environment's too, so the policy sees what it was trained on."""
    return RouterConfig(max_batch=config.max_num_seqs, max_model_len=config.max_model_len,
                        slo_tpot_s=config.slo_tpot_s, slo_ttft_s=config.slo_ttft_s)


def build_observer(config: ServerConfig, actions: list[Decision]) -> ServingObserver:
    settings = router_config(config)
    return ServingObserver(observation_spec_for(actions, settings), LoadStats(settings.slo_tpot_s, settings.slo_ttft_s),
                           settings.slo_penalty)


def load_policy(engine: Engine, config: ServerConfig) -> tuple[LearnedPolicy | None, CheckpointError | None]:
    """The learned policy, or why it cannot be used (missing, corrupt, another spec, a level we lack)."""
    if not config.policy:
        return None, None
    try:
        manifest = read_manifest(config.policy)
        actions = [a.decision for a in manifest.actions]
        for decision in actions:
            try:
                engine.validate_decision(decision)
            except ValueError as exc:
                raise CheckpointSpecMismatch(f"the policy's action {decision.label} cannot run here: {exc}") from exc
        spec = build_observer(config, actions).builder.spec
        return LearnedPolicy.load(config.policy, obs_spec_version=spec.version, obs_names=spec.names), None
    except CheckpointError as exc:
        return None, exc


def default_actions(engine: Engine) -> list[Decision]:
    """The environment's default action list, less any chain this engine cannot run."""
    actions = []
    for label in DEFAULT_ACTIONS:
        decision = Decision.parse(label)
        try:
            engine.validate_decision(decision)
        except ValueError:
            continue
        actions.append(decision)
    return actions


def fallback_decisions(engine: Engine, actions: list[Decision]) -> list[Decision]:
    """What the cost model chooses from: the action list, plus the ladder's chains (engine/ladder.py)
    through every model level the action list does not use (the trained draft, quantized copies),
    plus every chain with a model first level at K = 8 with each p_min of `STOP_P_MINS` (its
    draft stops inside the step; predicted neutral until the trackers measure its confidence)."""
    decisions = list(actions)
    used = {name for d in decisions for name in d.chain}
    missing = [name for name in engine.levels if name != TARGET and name not in used]
    chains = [c for c in ladder_chains(list(engine.levels)) if any(name in missing for name in c)]
    decisions += decision_grid(chains, (2, 4, 8))
    stoppable = [d.chain for d in decisions if not d.is_plain and d.chain[0] not in engine.drafters]
    decisions += [Decision(chain, 8, p) for chain in dict.fromkeys(stoppable) for p in STOP_P_MINS]
    return list(dict.fromkeys(decisions))


def seed_acceptance_priors(engine: Engine, model_name: str) -> None:
    """Start the trackers from the acceptance `python -m env.calibrate` measured (the simulator
    starts from it too): with a flat guess the cost model may rule out a chain it never tries."""
    path = resolve_path(f"profiles/acceptance_{model_name}.{engine.precision.name}.json")
    if not path.exists():
        # the fp32 paths compute the same model to rounding, so they share one calibration
        path = resolve_path(f"profiles/acceptance_{model_name}.json")
        if not path.exists():
            return
        if engine.precision.dtype != torch.float32 or engine.precision.weights != "dense":
            logger.warning("no acceptance calibration for the %s path; starting the trackers from the "
                           "fp32 one (%s)", engine.precision.name, path)
    try:
        fitted = SimCalibration.load(path).acceptance
        engine.set_acceptance_priors(fitted.per_token_acceptance(), fitted.confidence_histograms())
    except (ValueError, TypeError, KeyError) as exc:
        logger.warning("acceptance models %s are unusable (%s): trackers start from %.2f", path, exc,
                       engine.trackers.prior)


def build_fallback(engine: Engine, config: ServerConfig, actions: list[Decision], model_name: str) -> CostModelRouter:
    """The cost model, used whenever the learned policy is unavailable or untrusted."""
    cost_model = CostModel(load_profile(engine, config, model_name), fallback_decisions(engine, actions),
                           slo_tpot_s=config.slo_tpot_s)
    start = time.perf_counter()
    priced = cost_model.warm(config.max_num_seqs, config.max_model_len, engine.trackers.snapshot())
    logger.info("cost model: %d decisions priced at %d (batch, context) points in %.2f s", len(cost_model.decisions),
                priced, time.perf_counter() - start)
    return CostModelRouter(cost_model, correction=OnlineCorrectionConfig(enabled=config.online_correction))


def state_for_engine(engine: Engine, config: ServerConfig, model_name: str, fallback=None,
                     profile_name: str | None = None,
                     sampling_defaults: SamplingDefaults = OPENAI_DEFAULTS) -> ServingState:
    """Wrap `engine` with the guarded router (fallback: the cost model unless one is given), the
    observers and the engine loop. `profile_name` names the default profile file."""
    seed_acceptance_priors(engine, profile_name or model_name)
    metrics = ServingMetrics(model_name)
    learned, error = load_policy(engine, config) if config.router == "learned" else (None, None)
    actions = learned.decisions() if learned is not None else default_actions(engine)
    observer = build_observer(config, actions)
    decision_log = (BackgroundDecisionLog(config.decision_log, max_bytes=int(config.decision_log_max_mb * 2 ** 20))
                    if config.decision_log else None)
    if fallback is None and config.router in ROUTER_NAMES:
        fallback = build_fallback(engine, config, actions, profile_name or model_name)
    elif fallback is None:
        decision = Decision.parse(config.router)
        engine.validate_decision(decision)
        fallback = StaticRouter(decision)
    router = GuardedRouter(fallback, learned,
                           load_error=error, observer=observer, actions=actions,
                           max_decision_s=config.max_decision_ms / 1e3, metrics=metrics,
                           decision_log=decision_log, policy_path=config.policy, mode=config.router)
    engine.set_router(router)
    engine.show_signals(learned is not None and bool(observer.builder.signal_drafters))   # only the policy reads them
    wait_estimator = WaitEstimator(config.max_num_seqs)
    spec_metrics = (None if config.per_request_spec_metrics == "none"
                    else PerRequestSpecMetrics(config.per_request_spec_metrics, max_requests=4 * config.max_in_flight))
    observers = [metrics, observer, wait_estimator] + ([spec_metrics] if spec_metrics else [])
    loop = EngineLoop(engine, observers=observers)
    if learned is not None:
        logger.info("router: learned policy %s (%d actions)", router.policy_version, len(actions))
    return ServingState(engine, loop, config, model_name, metrics, router, sampling_defaults=sampling_defaults,
                        spec_metrics=spec_metrics, retry_promises=RetryPromises(wait_estimator))


def build_state(config: ServerConfig) -> ServingState:
    """Load the model (and the trained draft and EAGLE head when there are) and wrap it for serving."""
    import torch

    from engine.build import DraftSpec
    from engine.models import load_model

    if config.num_threads:
        torch.set_num_threads(config.num_threads)      # loading too: fewer threads than cores on a shared box
    loaded = load_model(config.model)
    limit = getattr(loaded.model.config, "max_position_embeddings", None)
    if limit and config.max_model_len > limit:
        logger.info("max_model_len %d exceeds the model's %d positions; using %d", config.max_model_len, limit, limit)
        config = dataclasses.replace(config, max_model_len=limit)
    drafts = []
    if config.draft and Path(config.draft).exists():     # a path that exists must hold a draft made for this model
        drafts.append(DraftSpec("draft", config.draft))
    if config.eagle:                # a default head that is missing or made for another model is skipped, and logged
        drafts.append(DraftSpec("eagle", config.eagle, kind="eagle", if_absent="skip", if_unusable="skip"))
    engine_config = EngineConfig(max_num_seqs=config.max_num_seqs, max_model_len=config.max_model_len,
                                 max_num_tokens=max_num_tokens(config), quantized_levels=config.quantized_levels,
                                 **config.precision_kwargs(release_model_weights=True))
    engine = Engine.from_pretrained(loaded, drafts=drafts, config=engine_config)
    for name, note in engine.draft_notes.items():
        logger.info("%s: %s", name, note)
    logger.info("forward path: %s on %s (--dtype %s, --kernel %s, --weights %s, --attention %s)",
                engine.precision.name, engine.precision.device, config.dtype, config.kernel, config.weights,
                config.attention)
    if engine.path_choice is not None:
        logger.info("forward-path self-test:\n%s", engine.path_choice.table())
    defaults = resolve_sampling_defaults(config.generation_config, config.model, loaded.name)
    logger.info("sampling defaults (%s): temperature %g, top_p %g, top_k %d", defaults.source, defaults.temperature,
                defaults.top_p, defaults.top_k)
    return state_for_engine(engine, config, config.served_model_name or loaded.name, profile_name=loaded.name,
                            sampling_defaults=defaults)
