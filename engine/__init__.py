"""SpecRoute engine: models, drafters, KV caches with rollback, verification, the multi-level step."""

from engine.config import EngineConfig
from engine.decision import TARGET, Decision, StaticRouter
from engine.engine import Engine, StepRecord
from engine.sampling import SamplingParams
from engine.sequence import FinishReason, Request, RequestOutput

__all__ = ["Decision", "Engine", "EngineConfig", "FinishReason", "Request", "RequestOutput",
           "SamplingParams", "StaticRouter", "StepRecord", "TARGET"]
