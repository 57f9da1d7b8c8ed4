"""Drafters: model-free proposers by name; model levels are added by the engine."""

from engine.drafters.base import ModelFreeDrafter
from engine.drafters.ngram import NgramDrafter
from engine.drafters.suffix import SuffixDrafter

MODEL_FREE_DRAFTERS: dict[str, type[ModelFreeDrafter]] = {
    NgramDrafter.name: NgramDrafter,
    SuffixDrafter.name: SuffixDrafter,
}

__all__ = ["MODEL_FREE_DRAFTERS", "ModelFreeDrafter", "NgramDrafter", "SuffixDrafter"]
