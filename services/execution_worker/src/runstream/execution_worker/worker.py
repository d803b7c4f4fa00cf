"""The execution worker: `script_generated` -> step execute -> `execution_completed`/`_failed`.

The SQL runs in a sandboxed child process. While it runs the worker also listens (core
NATS) for the message's `cancel_requested`; on cancel it cancels the sandbox task, which
kills the child within a second.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any, Literal, NoReturn

import msgspec
import nats.js.errors
import structlog

from runstream.bus import Bus, ConsumerSpec, DatasetCache, Delivery, Retry
from runstream.contracts import (
    EVENT_MAX_BYTES,
    DeadLetter,
    ErrorInfo,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionStarted,
    ScriptGenerated,
    encode,
    utcnow,
)
from runstream.execution_worker.display import column_formats, display_rows, markdown
from runstream.execution_worker.parquet_cache import ParquetCache
from runstream.execution_worker.pool import SparePool
from runstream.execution_worker.sandbox import (
    LOAD_FAILED,
    SandboxError,
    SandboxLimits,
    SandboxResult,
    run_sandboxed,
)
from runstream.execution_worker.settings import ExecutionWorkerSettings
from runstream.pipeline import (
    Consumer,
    MessageGuard,
    StepReporter,
    Stop,
    consumer_spec,
    dispatch,
    run_pipeline_worker,
    settle_dead_letter,
)

logger = structlog.get_logger()

WORKER = "execution-worker"


class ExecutionWorker:
    def __init__(
        self, bus: Bus, settings: ExecutionWorkerSettings, spares: SparePool | None = None,
        datasets: DatasetCache | None = None, parquet: ParquetCache | None = None,
    ) -> None:
        self.bus = bus
        self.spares = spares
        self.settings = settings
        # Questions about one dataset come in runs: its bytes are read once per process.
        self.datasets = datasets or DatasetCache(settings.dataset_cache_bytes)
        # ...and a CSV is parsed once per process: later queries load its Parquet copy.
        self.parquet = parquet or ParquetCache(settings.parquet_cache_bytes)
        self.parquet_loads = 0  # queries answered from a Parquet copy (tests, metrics)
        self.limits = SandboxLimits(
            timeout_s=settings.sandbox_timeout_s,
            memory_mb=settings.sandbox_memory_mb,
            threads=settings.sandbox_threads,
            max_rows=settings.max_result_rows,
            cpu_s=settings.sandbox_cpu_s,
        )
        # message id -> pid of its running sandbox child (observability and tests)
        self.children: dict[str, int] = {}

    @classmethod
    def builder(
        cls, settings: ExecutionWorkerSettings, out: list[ExecutionWorker] | None = None
    ) -> Callable[[Bus, AsyncExitStack], Awaitable[list[Consumer]]]:
        """What `run_pipeline_worker` builds: the worker with its spare pool (closed with
        the worker). `out` receives the instance, for a caller that watches its children."""

        async def build(bus: Bus, resources: AsyncExitStack) -> list[Consumer]:
            # More spares than concurrent queries could never all be used at once.
            spares = await resources.enter_async_context(SparePool(
                min(settings.sandbox_spares, settings.concurrency),
                settings.sandbox_spare_idle_s))
            worker = cls(bus, settings, spares)
            resources.callback(worker.parquet.close)  # its files go when the worker stops
            if out is not None:
                out.append(worker)
            return [Consumer(worker.spec(), worker.handle)]

        return build

    def spec(self) -> ConsumerSpec:
        return consumer_spec(self.settings, self.bus.subjects.message_type("script_generated"))

    async def handle(self, delivery: Delivery) -> None:
        async def execute(script: ScriptGenerated, guard: MessageGuard,
                          steps: StepReporter) -> None:
            await self.execute(script, guard, steps, delivery)

        await dispatch(self.bus, delivery, ScriptGenerated, execute)

    async def _result_exists(self, script: ScriptGenerated) -> bool:
        for kind in ("execution_completed", "execution_failed"):
            subject = self.bus.subjects.message(script.session_id, script.message_id, kind)
            if await self.bus.get_last_for_subject(subject) is not None:
                return True
        return False

    async def execute(
        self,
        script: ScriptGenerated,
        guard: MessageGuard,
        steps: StepReporter,
        delivery: Delivery,
    ) -> None:
        if await self._result_exists(script):
            return  # a previous delivery finished; only its ack was lost
        await guard.check("execute")
        done = await steps.is_completed("execute")
        if not done:
            await steps.started("execute")
        dataset = script.dataset
        if dataset is None:
            await self._fail(script, guard, steps, "sandbox", "the script names no dataset")
            return
        try:
            digest, data = await self.datasets.read(self.bus, dataset.object_name)
        except (nats.js.errors.NotFoundError, nats.js.errors.ObjectNotFoundError):
            await self._fail(
                script, guard, steps, "sandbox", f"dataset {dataset.name} is no longer stored"
            )
            return
        await steps.publish(
            ExecutionStarted(
                event_id=steps.event_id("execute", "execution_started"),
                at=utcnow(),
                session_id=script.session_id,
                message_id=script.message_id,
                attempt=script.attempt,
                limits=_limits_dict(self.limits),
            )
        )
        try:
            async with guard.keep_renewed("execute"):
                if dataset.format == "parquet":  # checked at upload; needs no copy
                    result = await self._run_cancellable(
                        script, guard, steps, data, "parquet", dataset.table_name)
                else:
                    result = await self._run_csv(script, guard, steps, data, digest,
                                                 dataset.table_name)
        except SandboxError as exc:
            if exc.retryable:
                await self._retry(script, steps, delivery, exc)  # raises Retry
            await self._fail(script, guard, steps, exc.kind, exc.message)
            return
        if not done:
            shown = f" (first {len(result.rows)} shown)" if result.truncated else ""
            await steps.completed(
                "execute",
                duration_ms=result.duration_ms,
                text=(f"{result.row_count} row(s){shown} in {result.duration_ms} ms"),
            )
        await steps.publish(
            completed_event(
                script, result, event_id=steps.event_id("execute", "execution_completed")
            )
        )

    async def _run_csv(
        self, script: ScriptGenerated, guard: MessageGuard, steps: StepReporter,
        data: bytes, digest: str, table_name: str,
    ) -> SandboxResult:
        """The CSV's Parquet copy if one is kept; else the CSV, and the child writes the
        copy if no other query is writing it. `digest` is "" for bytes not checked."""
        with self.parquet.use(digest) as copy:
            if copy is not None:
                try:
                    result = await self._run_cancellable(
                        script, guard, steps, b"", "parquet", table_name, source=copy)
                    self.parquet_loads += 1
                    return result
                except SandboxError as exc:
                    if not exc.message.startswith(LOAD_FAILED):
                        raise
                    # The copy, not the query: drop it and answer from the CSV.
                    logger.warning("parquet_cache.unreadable", error=exc.message)
                    self.parquet.forget(digest)
        with self.parquet.claim(digest) as copy_to:
            return await self._run_cancellable(
                script, guard, steps, data, "csv", table_name, copy_to=copy_to)

    async def _run_cancellable(
        self,
        script: ScriptGenerated,
        guard: MessageGuard,
        steps: StepReporter,
        data: bytes,
        fmt: Literal["csv", "parquet"],
        table_name: str,
        *,
        source: str | None = None,
        copy_to: str | None = None,
    ) -> SandboxResult:
        mid = script.message_id
        cancelled = asyncio.Event()

        async def on_cancel(_msg: Any) -> None:
            cancelled.set()

        subject = self.bus.subjects.message(script.session_id, mid, "cancel_requested")
        sub = await self.bus.nc.subscribe(subject, cb=on_cancel)
        try:
            # Subscribed first, then checked: a cancel is seen whichever came first.
            if await guard.cancel_requested():
                raise Stop("cancel requested")

            def on_start(pid: int) -> None:
                self.children[mid] = pid
                logger.info("sandbox.started", pid=pid)

            reports: list[asyncio.Task[None]] = []

            def on_running() -> None:
                reports.append(
                    asyncio.create_task(
                        steps.progressed("execute", 50, "dataset loaded; query running")
                    )
                )

            run = asyncio.create_task(
                run_sandboxed(
                    data=data,
                    fmt=fmt,
                    table_name=table_name,
                    sql=script.sql,
                    limits=self.limits,
                    on_start=on_start,
                    on_running=on_running,
                    pool=self.spares,
                    source=source,
                    copy_to=copy_to,
                )
            )
            waiter = asyncio.create_task(cancelled.wait())
            try:
                await asyncio.wait({run, waiter}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                if not run.done():
                    run.cancel()  # cancel requested, or we are shutting down: kill the child
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await run
            if reports:  # progress goes out before the step's completion, never after
                await asyncio.gather(*reports, return_exceptions=True)
            if run.cancelled():
                raise Stop("cancel requested")
            return run.result()
        finally:
            self.children.pop(mid, None)
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _retry(
        self, script: ScriptGenerated, steps: StepReporter, delivery: Delivery,
        exc: SandboxError,
    ) -> NoReturn:
        """A sandbox killed from outside: run the query again on a later delivery (any
        replica), as for any transient failure. On the last one, settle `failed` now
        rather than rely on the advisory alone (core NATS, lost if nobody listens)."""
        n, most = delivery.num_delivered, self.settings.max_deliver
        await steps.log("execute", f"{exc.message} (attempt {n} of {most})",
                        level="warning", key=f"retry-{n}")
        if most > 0 and n >= most:
            await settle_dead_letter(
                self.bus, script,
                DeadLetter(consumer=self.settings.durable, stream_seq=delivery.seq,
                           deliveries=n, subject=delivery.subject),
                reason=exc.message,
            )
        raise Retry(exc.message) from exc

    async def _fail(
        self,
        script: ScriptGenerated,
        guard: MessageGuard,
        steps: StepReporter,
        kind: str,
        message: str,
    ) -> None:
        await steps.failed("execute", message, code=f"execution_{kind}")
        await steps.publish(
            ExecutionFailed(
                event_id=steps.event_id("execute", "execution_failed"),
                at=utcnow(),
                session_id=script.session_id,
                message_id=script.message_id,
                attempt=script.attempt,
                kind=kind,  # type: ignore[arg-type]
                error=message,
                duration_ms=steps.elapsed_ms("execute"),
            )
        )
        await guard.settle(
            "failed", error=ErrorInfo(code=f"execution_{kind}", message=message, step="execute")
        )


def completed_event(
    script: ScriptGenerated, result: SandboxResult, *, event_id: str
) -> ExecutionCompleted:
    """The result with its display form, cut to fit one event if it must be.

    The rows are halved until the encoded event fits (`truncated` then says so, and
    `row_count` still counts them all), so a wide result never fails the analysis."""
    names = [c.name for c in result.columns]
    rows = [list(r) for r in result.rows]
    formats = column_formats(result.columns, rows, script.shape)
    shown = display_rows(formats, rows)
    while True:
        event = ExecutionCompleted(
            event_id=event_id,
            at=utcnow(),
            session_id=script.session_id,
            message_id=script.message_id,
            attempt=script.attempt,
            columns=result.columns,
            rows=rows,
            row_count=result.row_count,
            truncated=result.truncated or len(rows) < len(result.rows),
            markdown=markdown(names, shown, result.row_count),
            duration_ms=result.duration_ms,
            question=script.question,
            interpretation=script.interpretation,
            shape=script.shape,
            formats=formats,
            display_rows=shown,
        )
        if len(rows) <= 1 or len(encode(event)) <= EVENT_MAX_BYTES - _HEADROOM:
            return event
        keep = len(rows) // 2
        rows, shown = rows[:keep], shown[:keep]


# Room left under the limit for what a retry could add (a longer attempt id, a timestamp).
_HEADROOM = 1024


def _limits_dict(limits: SandboxLimits) -> dict[str, Any]:
    return msgspec.to_builtins(limits)  # type: ignore[no-any-return]


async def run_worker(
    settings: ExecutionWorkerSettings, stop: asyncio.Event, ready: asyncio.Event | None = None
) -> None:
    """Run until `stop` is set: the pipeline consumer, with its pool of spare children."""
    await run_pipeline_worker(WORKER, settings, ExecutionWorker.builder(settings), stop, ready)
