"""Latency profiles: forward time per level against batch size, tokens per row and context.

Public surface:
    LatencyProfile        the grid of every level, `forward_time(level, batch, tokens_per_row,
                          context)`, `to_json()`, `save(path)`, `LatencyProfile.load(path)`.
    LevelProfile          one level's grid (kind "model" or "model_free").
    ProfileError          a missing, unreadable or malformed profile, or a level it lacks.
    measure_profile       time an Engine's levels into a LatencyProfile within a budget.
    load_or_measure       load a profile file, measuring (and saving) the levels it lacks.
    profile_file          profiles/<model>.<forward path>.json, the shipped file of one path (measured
                          on another machine: a prior).
    load_or_calibrate     this machine's curve of an engine's levels: cached, else measured within a budget.
    machine_profile_file  where the newest curve of a model and path on this CPU lives (simulator, training).

`python -m engine.profile --model default` measures one from the command line into
`profiles/SmolLM2-135M-Instruct.float32-prepacked.json` (the default path's file).
"""

from engine.profile.latency_profile import LatencyProfile, LevelProfile, ProfileError, profile_file
from engine.profile.machine_curve import load_or_calibrate, machine_profile, machine_profile_file
from engine.profile.measure import load_or_measure, measure_profile

__all__ = ["LatencyProfile", "LevelProfile", "ProfileError", "load_or_calibrate", "load_or_measure", "machine_profile",
           "machine_profile_file", "measure_profile", "profile_file"]
