"""The analysis worker's settings (RUNSTREAM_* environment), read once in __main__."""

from __future__ import annotations

from runstream.bus import ServiceSettings


class AnalysisWorkerSettings(ServiceSettings):
    planner: str = "rules"  # "rules" | "openai"
    openai_base_url: str | None = None
    openai_model: str | None = None
    openai_api_key: str | None = None
    planner_timeout_s: float = 30.0
    # JetStream delivery: a transient failure (planner timeout) is redelivered with backoff
    # until max_deliver, then the message is dead-lettered and settled failed.
    max_deliver: int = 4
    concurrency: int = 4
    ack_wait_s: float = 30.0
    backoff_s: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0)
    durable: str = "analysis-worker"
