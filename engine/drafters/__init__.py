"""Drafters: model-free proposers by name; model levels are added by the engine."""

from engine.drafters.base import (
    SIGNAL_LENGTH,
    SIGNAL_LEVELS,
    ModelFreeDrafter,
    length_signal,
)
from engine.drafters.ngram import NgramDrafter
from engine.drafters.suffix import SuffixDrafter

MODEL_FREE_DRAFTERS: dict[str, type[ModelFreeDrafter]] = {
    NgramDrafter.name: NgramDrafter,
    SuffixDrafter.name: SuffixDrafter,
}

__all__ = ["MODEL_FREE_DRAFTERS", "SIGNAL_LENGTH", "SIGNAL_LEVELS", "ModelFreeDrafter", "NgramDrafter", "SuffixDrafter",
           "length_signal"]
