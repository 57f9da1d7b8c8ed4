"""Which latency profile the server's cost model reads: `--profile`, this machine's curve, or the prior.

The curve is engine/profile/machine_curve.py's: cached per machine, path, model and levels, or
calibrated at start-up within `--calibration-budget-s`. The shipped `profiles/*.json` were
measured on another machine: with a budget of 0 the server runs on that prior and says so once.
"""

from __future__ import annotations

import logging
from pathlib import Path

from engine import Engine
from engine.profile import LatencyProfile, ProfileError, load_or_calibrate, measure_profile, profile_file
from env.config import resolve_path
from serving.config import ServerConfig

logger = logging.getLogger("serving")


def shipped_profile_path(model_name: str, precision_name: str) -> Path:
    """The shipped profile of a model on a path (the older path-less file where that one is missing):
    measured on another machine, so a prior."""
    path = resolve_path(profile_file(model_name, precision_name))
    legacy = resolve_path(f"profiles/{model_name}.json")
    return legacy if not path.exists() and legacy.exists() else path


def load_profile(engine: Engine, config: ServerConfig, model_name: str) -> LatencyProfile:
    """The latency profile the cost model reads: `--profile` as given (levels it lacks measured);
    else this machine's curve (engine/profile/machine_curve.py: cached, or calibrated now within
    --calibration-budget-s); with a budget of 0 the shipped prior, with one warning."""
    if engine.profile is not None:
        return engine.profile
    path = resolve_path(config.profile) if config.profile else shipped_profile_path(model_name, engine.precision.name)
    prior = None
    if path.exists():
        try:
            prior = LatencyProfile.load(path)
        except ProfileError as exc:
            logger.warning("latency profile %s is unusable (%s)", path, exc)
    if not config.profile and config.calibration_budget_s > 0:
        engine.set_profile(load_or_calibrate(engine, model_name, config.calibration_budget_s, prior=prior))
        return engine.profile
    if prior is not None and not config.profile:
        logger.warning("latency profile %s was measured on another machine (%s), not calibrated on this one "
                       "(--calibration-budget-s 0)", path, prior.meta.get("cpu", "cpu unknown"))
    if prior is None:
        logger.info("no usable latency profile at %s: measuring one (%.0f s budget)", path, config.profile_budget_s)
        engine.set_profile(measure_profile(engine, budget_s=config.profile_budget_s, model=model_name))
        return engine.profile
    missing = [name for name in list(engine.levels) + list(engine.drafters) if name not in prior.levels]
    if missing:                                          # not saved: the file stays what it was
        prior = prior.merged(measure_profile(engine, levels=missing, budget_s=config.profile_budget_s,
                                             model=prior.model))
    engine.set_profile(prior)
    return engine.profile
