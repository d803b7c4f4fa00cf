"""The analysis worker's settings (RUNSTREAM_* environment), read once in __main__."""

from __future__ import annotations

from pydantic import Field, SecretStr

from runstream.bus import DEFAULT_CACHE_BYTES
from runstream.pipeline import WorkerSettings


class AnalysisWorkerSettings(WorkerSettings):
    planner: str = "rules"  # "rules" | "openai"
    openai_base_url: str | None = None
    openai_model: str | None = None
    openai_api_key: SecretStr | None = None  # never printed: repr shows **********
    planner_timeout_s: float = 30.0
    # Test/demo knob: hold every plan step this long before planning (keeps an
    # analysis running on purpose, e.g. to race submits against it). 0 in production.
    planner_delay_s: float = 0.0
    # Dataset bytes kept in this process, by content digest (docs/workers.md); an object
    # larger than this is read each time. 0 turns the cache off.
    dataset_cache_bytes: int = Field(default=DEFAULT_CACHE_BYTES, ge=0)
    durable: str = "analysis-worker"
    # Handlers mostly wait (NATS round trips, the planner's HTTP call): 16 in flight
    # keep both busy; more would hoard deliveries another replica could take.
    concurrency: int = 16
