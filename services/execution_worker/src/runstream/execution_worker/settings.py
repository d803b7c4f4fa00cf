"""The execution worker's settings (RUNSTREAM_* environment), read once in __main__."""

from __future__ import annotations

from runstream.bus.worker import WorkerSettings


class ExecutionWorkerSettings(WorkerSettings):
    # Sandbox limits for one query's child process.
    sandbox_timeout_s: float = 30.0
    sandbox_memory_mb: int = 512
    sandbox_threads: int = 2
    sandbox_cpu_s: int = 60
    max_result_rows: int = 1000
    # Keep one sandbox child started ahead of time (still one child per query).
    sandbox_spare_child: bool = True
    durable: str = "execution-worker"
    # Each query is a child process with up to sandbox_memory_mb and sandbox_threads:
    # 4 in flight bound memory (4 x 512 MB) and already saturate two cores.
    concurrency: int = 4
