"""Bus settings: which server, stream and subject prefix; retention and dedupe."""

from __future__ import annotations

import msgspec

from runstream.contracts import DEFAULT_PREFIX, STREAM_NAME


class BusSettings(msgspec.Struct, frozen=True, kw_only=True):
    url: str = "nats://127.0.0.1:4222"
    stream: str = STREAM_NAME
    prefix: str = DEFAULT_PREFIX
    max_age_s: float = 7 * 24 * 3600.0
    max_msgs: int = -1
    duplicate_window_s: float = 120.0
    replicas: int = 1
    datasets_bucket: str = "RUNSTREAM_DATASETS"
    lock_ttl_s: float = 1800.0
    connect_timeout_s: float = 5.0
