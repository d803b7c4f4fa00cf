"""The analysis worker's settings (RUNSTREAM_* environment), read once in __main__."""

from __future__ import annotations

from pydantic import SecretStr

from runstream.pipeline import WorkerSettings


class AnalysisWorkerSettings(WorkerSettings):
    planner: str = "rules"  # "rules" | "openai"
    openai_base_url: str | None = None
    openai_model: str | None = None
    openai_api_key: SecretStr | None = None  # never printed: repr shows **********
    planner_timeout_s: float = 30.0
    durable: str = "analysis-worker"
    # Handlers mostly wait (NATS round trips, the planner's HTTP call): 16 in flight
    # keep both busy; more would hoard deliveries another replica could take.
    concurrency: int = 16
