"""Latency profiles: forward time per level against batch size, tokens per row and context.

Public surface:
    LatencyProfile        the grid of every level, `forward_time(level, batch, tokens_per_row,
                          context)`, `to_json()`, `save(path)`, `LatencyProfile.load(path)`.
    LevelProfile          one level's grid (kind "model" or "model_free").
    ProfileError          a missing, unreadable or malformed profile, or a level it lacks.
    measure_profile       time an Engine's levels into a LatencyProfile within a budget.
    load_or_measure       load a profile file, measuring (and saving) the levels it lacks.

`python -m engine.profile --model default --out profiles/SmolLM2-135M-Instruct.json` measures
one from the command line.
"""

from engine.profile.latency_profile import LatencyProfile, LevelProfile, ProfileError
from engine.profile.measure import load_or_measure, measure_profile

__all__ = ["LatencyProfile", "LevelProfile", "ProfileError", "load_or_measure", "measure_profile"]
