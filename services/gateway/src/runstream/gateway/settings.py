"""Gateway settings (RUNSTREAM_* environment variables)."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from runstream.gateway.ratelimit import parse_limit
from runstream.runtime import DatabaseSettings


class GatewaySettings(DatabaseSettings):
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    # > 1: `python -m runstream.gateway` supervises this many processes, each with its own
    # SO_REUSEPORT socket on http_host:http_port, NATS connection and Postgres pool
    # (docs/operations.md#gateway-workers); 1: a single process, no supervisor.
    gateway_workers: int = Field(default=1, ge=1, le=64)
    # Secrets are SecretStr: repr, str and a JSON dump show '**********'; only Tokens and
    # /dev-token read the values.
    jwt_secret: SecretStr = SecretStr("")
    jwt_issuer: str = "runstream"
    stream_token_ttl_s: int = 300
    question_max_bytes: int = 8 * 1024
    title_max_chars: int = 200
    dataset_max_bytes: int = 50 * 1024 * 1024
    read_wait_s: float = 2.0  # how long a read waits for the projector to catch up
    # A Postgres that stops answering (rather than refusing) becomes a 503 after these.
    db_connect_timeout_s: float = 5.0
    db_command_timeout_s: float = 15.0
    prefer_wait_max_s: float = 60.0
    sse_heartbeat_s: float = 15.0
    sse_retry_ms: int = 2000
    # > 0: an SSE response ends after this long and the client resumes with Last-Event-ID
    # (spreads long-lived streams over replicas after a scale-out); 0: no end.
    sse_max_s: float = 0
    client_buffer: int = 1024  # frames buffered per stream client before it is dropped
    # bytes a live SSE client may leave untaken in its connection (past the kernel's
    # socket buffer) before it is dropped with a `reset`
    client_buffer_bytes: int = 1024 * 1024
    sample_dataset: str | None = None  # attached to every new session when set
    static_dir: str | None = None  # serve the web UI from here instead of the bundled one
    ws_max_clients: int = 10_000
    dev_token: SecretStr | None = None  # offered to loopback clients only
    # Rate limits, "N/second|minute|hour|day" or "off", counted across every replica in
    # the JetStream KV bucket `rate_limit_bucket` (default RL_<stream>):
    # writes (submits, retries, uploads, new sessions, chart requests, stream tokens) per
    # owner; routes that need no token (health, metrics, UI, schema) per client address.
    rate_limit_writes: str = "120/minute"
    rate_limit_public: str = "600/minute"
    rate_limit_bucket: str | None = None
    # Proxies whose X-Forwarded-For names the client (uvicorn's forwarded_allow_ips): behind
    # an ingress, its addresses, so that the per-address limit counts real clients.
    forwarded_allow_ips: str = "127.0.0.1"

    @field_validator("rate_limit_writes", "rate_limit_public")
    @classmethod
    def _limit(cls, value: str) -> str:
        parse_limit(value)
        return value

    def rate_limit_bucket_name(self) -> str:
        return self.rate_limit_bucket or f"RL_{self.stream}"
