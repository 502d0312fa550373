"""Continuous-batching inference engine (the code lives in :mod:`dlm_runtime.engine.scheduler`)."""

from dlm_runtime.engine.scheduler import (
    ATTENTIONS,
    MODES,
    BatchBuilder,
    CacheWrite,
    Draft,
    DraftDecoder,
    Engine,
    EngineStats,
    Event,
    Final,
    GenerationRequest,
    KVPool,
    Query,
    Usage,
    plan_forwards,
    sort_rows,
)

__all__ = [
    "ATTENTIONS",
    "MODES",
    "BatchBuilder",
    "CacheWrite",
    "Draft",
    "DraftDecoder",
    "Engine",
    "EngineStats",
    "Event",
    "Final",
    "GenerationRequest",
    "KVPool",
    "Query",
    "Usage",
    "plan_forwards",
    "sort_rows",
]
