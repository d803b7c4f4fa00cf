"""The execution worker: `script_generated` -> step execute -> `execution_completed`/`_failed`.

The SQL runs in a sandboxed child process. While it runs the worker also listens (core
NATS) for the message's `cancel_requested`; on cancel it cancels the sandbox task, which
kills the child within a second.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Literal, NoReturn

import msgspec
import nats.js.errors
import structlog

from runstream.bus import (
    Bus,
    ConsumerSpec,
    Delivery,
    MessageConsumer,
    Retry,
    ensure_consumer,
    get_dataset,
    watch_max_deliveries,
)
from runstream.bus.steps import (
    MessageGuard,
    StepReporter,
    Stop,
    on_max_deliveries,
    settle_dead_letter,
)
from runstream.bus.worker import consumer_spec, dispatch
from runstream.contracts import (
    DeadLetter,
    ErrorInfo,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionStarted,
    ScriptGenerated,
    utcnow,
)
from runstream.execution_worker.sandbox import (
    SandboxError,
    SandboxLimits,
    SandboxResult,
    close_spare_child,
    keep_spare_child,
    run_sandboxed,
)
from runstream.execution_worker.settings import ExecutionWorkerSettings

logger = structlog.get_logger()

WORKER = "execution-worker"


class ExecutionWorker:
    def __init__(self, bus: Bus, settings: ExecutionWorkerSettings) -> None:
        self.bus = bus
        self.settings = settings
        self.limits = SandboxLimits(
            timeout_s=settings.sandbox_timeout_s,
            memory_mb=settings.sandbox_memory_mb,
            threads=settings.sandbox_threads,
            max_rows=settings.max_result_rows,
            cpu_s=settings.sandbox_cpu_s,
        )
        # message id -> pid of its running sandbox child (observability and tests)
        self.children: dict[str, int] = {}

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
        done = await steps.last_completed() >= 4
        if not done:
            await steps.started("execute")
        dataset = script.dataset
        if dataset is None:
            await self._fail(script, guard, steps, "sandbox", "the script names no dataset")
            return
        try:
            data = await get_dataset(self.bus, dataset.object_name)
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
                result = await self._run_cancellable(
                    script, guard, steps, data,
                    "parquet" if dataset.format == "parquet" else "csv",  # checked at upload
                    dataset.table_name,
                )
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
            ExecutionCompleted(
                event_id=steps.event_id("execute", "execution_completed"),
                at=utcnow(),
                session_id=script.session_id,
                message_id=script.message_id,
                attempt=script.attempt,
                columns=result.columns,
                rows=[list(r) for r in result.rows],
                row_count=result.row_count,
                truncated=result.truncated,
                markdown=result.markdown,
                duration_ms=result.duration_ms,
                question=script.question,
            )
        )

    async def _run_cancellable(
        self,
        script: ScriptGenerated,
        guard: MessageGuard,
        steps: StepReporter,
        data: bytes,
        fmt: Literal["csv", "parquet"],
        table_name: str,
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
                logger.info("sandbox_started", pid=pid)

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


def _limits_dict(limits: SandboxLimits) -> dict[str, Any]:
    return msgspec.to_builtins(limits)  # type: ignore[no-any-return]


async def run_worker(
    settings: ExecutionWorkerSettings,
    stop: asyncio.Event,
    ready: asyncio.Event | None = None,
    *,
    worker_out: list[ExecutionWorker] | None = None,
) -> None:
    """Run until `stop` is set: connect, consume, watch dead letters; shut down in reverse."""
    async with Bus.connect(settings.bus(), name=WORKER) as bus:
        await bus.provision()
        worker = ExecutionWorker(bus, settings)
        if worker_out is not None:
            worker_out.append(worker)
        spec = worker.spec()
        await ensure_consumer(bus, spec)

        async def exhausted(adv: Any, raw: Any) -> None:
            await on_max_deliveries(bus, adv, raw)

        advisory = await watch_max_deliveries(bus, spec.durable, exhausted)
        keep_spare_child(settings.sandbox_spare_child)
        consumer = asyncio.create_task(MessageConsumer(bus, spec, worker.handle).run(stop))
        if ready is not None:
            ready.set()
        try:
            await consumer
        finally:
            keep_spare_child(False)
            await close_spare_child()
            with contextlib.suppress(Exception):
                await advisory.unsubscribe()
