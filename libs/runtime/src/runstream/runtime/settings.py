"""The environment every service shares (RUNSTREAM_* variables).

Each service subclasses `ServiceSettings` with its own fields and reads it once in its
`__main__`; nothing reads the environment at import time.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from runstream.bus.settings import BusSettings


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RUNSTREAM_", extra="ignore")

    nats_url: str = "nats://127.0.0.1:4222"
    stream: str = "RUNSTREAM"
    prefix: str = "rs"
    stream_max_age_s: float = 7 * 24 * 3600.0
    stream_max_msgs: int = -1
    duplicate_window_s: float = 120.0
    # Copies of the stream (and of the workers' durable consumers) in a JetStream
    # cluster: 1 on a single server, 3 to survive losing any one node.
    stream_replicas: int = 1
    datasets_bucket: str = "RUNSTREAM_DATASETS"
    lock_ttl_s: float = 1800.0
    log_level: str = "INFO"
    log_json: bool | None = None
    otlp_endpoint: str | None = None
    metrics_port: int = 0  # side port for /metrics on services without HTTP; 0 = off

    def bus(self) -> BusSettings:
        return BusSettings(
            url=self.nats_url, stream=self.stream, prefix=self.prefix,
            max_age_s=self.stream_max_age_s, max_msgs=self.stream_max_msgs,
            duplicate_window_s=self.duplicate_window_s, replicas=self.stream_replicas,
            datasets_bucket=self.datasets_bucket, lock_ttl_s=self.lock_ttl_s,
        )


class DatabaseSettings(ServiceSettings):
    """For the services that read or write Postgres (projector, gateway, CLI)."""

    database_url: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        validation_alias=AliasChoices("RUNSTREAM_DATABASE_URL", "DATABASE_URL"),
    )
    db_schema: str = "runstream"
    # P: the stream is folded in P partitions by session (docs/projector.md). The same
    # value for the projector and the gateway: it names the checkpoints a read waits on.
    partitions: int = Field(default=1, ge=1, le=1024)
