"""The execution worker's settings (RUNSTREAM_* environment), read once in __main__."""

from __future__ import annotations

from runstream.bus import ServiceSettings


class ExecutionWorkerSettings(ServiceSettings):
    # Sandbox limits for one query's child process.
    sandbox_timeout_s: float = 30.0
    sandbox_memory_mb: int = 512
    sandbox_threads: int = 2
    sandbox_cpu_s: int = 60
    max_result_rows: int = 1000
    max_deliver: int = 4
    concurrency: int = 4
    ack_wait_s: float = 30.0
    backoff_s: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0)
    durable: str = "execution-worker"
