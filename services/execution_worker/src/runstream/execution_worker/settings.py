"""The execution worker's settings (RUNSTREAM_* environment), read once in __main__."""

from __future__ import annotations

from pydantic import Field

from runstream.bus import DEFAULT_CACHE_BYTES
from runstream.execution_worker.parquet_cache import DEFAULT_PARQUET_CACHE_BYTES
from runstream.pipeline import WorkerSettings


class ExecutionWorkerSettings(WorkerSettings):
    # Sandbox limits for one query's child process.
    sandbox_timeout_s: float = 30.0
    sandbox_memory_mb: int = 512
    sandbox_threads: int = 2
    sandbox_cpu_s: int = 60
    max_result_rows: int = 1000
    # Sandbox children started ahead of time (still one child per query): at most this
    # many wait at once, capped at `concurrency`; 0 turns them off. One takes the start-up
    # (~250 ms) off back-to-back queries for ~45 MiB of RSS; see docs/workers.md.
    sandbox_spares: int = Field(default=1, ge=0)
    # A spare idle this long is killed, and replaced only when the next query comes.
    sandbox_spare_idle_s: float = Field(default=300.0, gt=0)
    # Dataset bytes kept in this process, by content digest (docs/workers.md); an object
    # larger than this is read each time. 0 turns the cache off.
    dataset_cache_bytes: int = Field(default=DEFAULT_CACHE_BYTES, ge=0)
    # Parquet copies of CSV datasets on disk, by content digest, so each CSV is parsed
    # once per process (docs/workers.md); least recently used out. 0 turns them off.
    parquet_cache_bytes: int = Field(default=DEFAULT_PARQUET_CACHE_BYTES, ge=0)
    durable: str = "execution-worker"
    # Each query is a child process with up to sandbox_memory_mb and sandbox_threads:
    # 4 in flight bound memory (4 x 512 MB) and already saturate two cores.
    concurrency: int = 4
