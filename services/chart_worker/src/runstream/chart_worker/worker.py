"""The chart worker: `execution_completed` -> step chart -> `analysis_settled(completed)`,
and ad-hoc chart tasks from `chart_requested`.

The pipeline's own chart is a chart task too (`auto=True`, task id derived from the
message), so automatic and ad-hoc charts are stored and served the same way. A chart
that cannot be drawn never fails the analysis: it settles completed without a chart.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack
from typing import Any

import structlog

from runstream.bus import Bus, Delivery, MaxDeliveries
from runstream.chart_worker.charts import choose_chart, render_svg_async
from runstream.chart_worker.settings import ChartWorkerSettings
from runstream.contracts import (
    TASK_END_TYPES,
    ChartCancelled,
    ChartCompleted,
    ChartEvent,
    ChartFailed,
    ChartProgressed,
    ChartRequested,
    ChartStarted,
    Column,
    ExecutionCompleted,
    decode,
    derived_id,
    utcnow,
)
from runstream.pipeline import (
    Consumer,
    MessageGuard,
    StepReporter,
    consumer_spec,
    decoded,
    dispatch,
    run_pipeline_worker,
)

logger = structlog.get_logger()

WORKER = "chart-worker"


def auto_task_id(message_id: str, attempt: int) -> str:
    return derived_id(message_id, attempt, "auto-chart")


class ChartCancelledSignal(Exception):
    """The chart task was cancelled between phases."""


class ChartTask:
    """Publishes one chart task's events, each with a deterministic id."""

    def __init__(self, bus: Bus, *, session_id: str, message_id: str, task_id: str) -> None:
        self.bus = bus
        self.session_id = session_id
        self.message_id = message_id
        self.task_id = task_id
        self._n = 0

    def _base(self, kind: str, n: int = 0) -> dict[str, Any]:
        return {
            "event_id": derived_id(self.task_id, kind, n),
            "at": utcnow(),
            "session_id": self.session_id,
            "task_id": self.task_id,
            "message_id": self.message_id,
        }

    def subject(self, kind: str) -> str:
        return self.bus.subjects.chart(self.session_id, self.task_id, kind)

    async def last(self, kind: str) -> ChartEvent | None:
        raw = await self.bus.get_last_for_subject(self.subject(kind))
        if raw is None:
            return None
        event = decode(raw.data or b"")
        return event if isinstance(event, ChartEvent) else None

    async def is_terminal(self) -> bool:
        for kind in sorted(TASK_END_TYPES):
            if await self.bus.get_last_for_subject(self.subject(kind)) is not None:
                return True
        return False

    async def cancel_requested(self) -> bool:
        return await self.last("chart_cancel_requested") is not None

    async def publish(self, event: ChartEvent) -> None:
        await self.bus.publish(event)

    async def requested(self, *, auto: bool, adjustment: str | None = None) -> None:
        await self.publish(
            ChartRequested(**self._base("requested"), auto=auto, adjustment_query=adjustment)
        )

    async def started(self, eta_ms: int | None) -> None:
        await self.publish(ChartStarted(**self._base("started"), eta_ms=eta_ms))

    async def progressed(
        self, progress: float, current_step: str, step_progress: float, eta_ms: int | None
    ) -> None:
        self._n += 1
        await self.publish(
            ChartProgressed(
                **self._base("progressed", self._n),
                progress=progress,
                current_step=current_step,
                step_progress=step_progress,
                eta_ms=eta_ms,
            )
        )

    async def failed(self, error: str, code: str = "failed") -> None:
        await self.publish(ChartFailed(**self._base("failed"), error=error, code=code))

    async def cancelled(self) -> None:
        await self.publish(ChartCancelled(**self._base("cancelled")))


class ChartWorker:
    def __init__(self, bus: Bus, settings: ChartWorkerSettings) -> None:
        self.bus = bus
        self.settings = settings
        self._mean_ms = float(settings.chart_eta_ms)
        self._timed = 0

    def consumers(self) -> list[Consumer]:
        """The pipeline's chart step, and ad-hoc chart tasks (whose exhaustion fails the
        task, never the analysis)."""
        s = self.settings
        return [
            Consumer(consumer_spec(s, self.bus.subjects.message_type("execution_completed")),
                     self.handle),
            Consumer(consumer_spec(s, self.bus.subjects.chart_type("chart_requested"),
                                   s.tasks_durable),
                     self.handle_task, self.task_exhausted),
        ]

    # --- drawing one chart --------------------------------------------------------------
    def _eta(self, started: float, fraction_done: float) -> int:
        elapsed = (time.perf_counter() - started) * 1000
        return max(
            0,
            int(
                self._mean_ms * (1 - fraction_done)
                if elapsed < self._mean_ms
                else self._mean_ms * 0.1
            ),
        )

    def _time(self, ms: int) -> None:
        self._timed += 1
        self._mean_ms += (ms - self._mean_ms) / min(self._timed, 20)

    async def draw(
        self,
        task: ChartTask,
        result: ExecutionCompleted,
        *,
        adjustment: str | None = None,
        cancellable: bool = False,
    ) -> ChartCompleted:
        """choose -> render -> chart_completed, reporting progress and ETA on the way."""
        began = time.perf_counter()

        async def phase_gate() -> None:
            if cancellable and await task.cancel_requested():
                raise ChartCancelledSignal()

        await task.started(eta_ms=int(self._mean_ms))
        await task.progressed(0, "choosing", 0, self._eta(began, 0))
        columns = [Column(name=c.name, type=c.type) for c in result.columns]
        choice = choose_chart(
            columns,
            result.rows,
            adjustment=adjustment,
            shape=result.shape,
            formats=result.formats,
            display_rows=result.display_rows,
            interpretation=result.interpretation,
        )
        await task.progressed(30, "choosing", 100, self._eta(began, 0.3))
        await phase_gate()
        svg: str | None = None
        if choice.spec is not None and choice.kind not in ("none", "number"):  # a card: no SVG
            await task.progressed(35, "rendering", 0, self._eta(began, 0.35))
            svg = await render_svg_async(choice.spec)
            await task.progressed(95, "rendering", 100, self._eta(began, 0.95))
            await phase_gate()
        duration = int((time.perf_counter() - began) * 1000)
        self._time(duration)
        completed = ChartCompleted(
            **task._base("completed"),
            chart_id=derived_id(task.task_id, "chart"),
            kind=choice.kind,
            title=choice.title,
            spec=choice.spec,
            svg=svg,
            duration_ms=duration,
        )
        await task.publish(completed)
        return completed

    # --- the pipeline step ------------------------------------------------------------------
    async def handle(self, delivery: Delivery) -> None:
        await dispatch(self.bus, delivery, ExecutionCompleted, self.chart_step)

    async def chart_step(
        self, result: ExecutionCompleted, guard: MessageGuard, steps: StepReporter
    ) -> None:
        await guard.check("chart")
        done = await steps.is_completed("chart")
        if not done:
            await steps.started("chart")
        task = ChartTask(
            self.bus,
            session_id=result.session_id,
            message_id=result.message_id,
            task_id=auto_task_id(result.message_id, result.attempt),
        )
        chart = await task.last("chart_completed")
        if not isinstance(chart, ChartCompleted) and not await task.is_terminal():
            await task.requested(auto=True)
            try:
                chart = await self.draw(task, result)
            except Exception as exc:  # a chart never fails the analysis
                logger.warning("chart.failed", exc_info=True)
                await task.failed(str(exc) or type(exc).__name__)
                await steps.log("chart", f"No chart: {exc}", level="warning", key="no-chart")
                chart = None
        summary = summarize(result, chart if isinstance(chart, ChartCompleted) else None)
        if not done:
            await steps.completed("chart", text=summary)
        await guard.settle("completed", summary=summary)

    # --- ad-hoc chart tasks -----------------------------------------------------------------
    async def handle_task(self, delivery: Delivery) -> None:
        event = decoded(delivery, ChartRequested)
        if event is None or event.auto:
            return  # the pipeline's own chart is drawn by the chart step
        task = ChartTask(
            self.bus,
            session_id=event.session_id,
            message_id=event.message_id,
            task_id=event.task_id,
        )
        if await task.is_terminal():
            return
        if await task.cancel_requested():
            await task.cancelled()
            return
        raw = await self.bus.get_last_for_subject(
            self.bus.subjects.message(event.session_id, event.message_id, "execution_completed")
        )
        result = decode(raw.data or b"") if raw is not None else None
        if not isinstance(result, ExecutionCompleted):
            await task.failed("this analysis has no result to chart", code="no_result")
            return
        try:
            await self.draw(task, result, adjustment=event.adjustment_query, cancellable=True)
        except ChartCancelledSignal:
            await task.cancelled()
        except Exception as exc:
            logger.warning("chart.task_failed", exc_info=True)
            await task.failed(str(exc) or type(exc).__name__)

    async def task_exhausted(self, _: Bus, adv: MaxDeliveries, raw: Any) -> None:
        if raw is None:
            return
        event = decode(raw.data or b"")
        if isinstance(event, ChartRequested):
            task = ChartTask(
                self.bus,
                session_id=event.session_id,
                message_id=event.message_id,
                task_id=event.task_id,
            )
            if not await task.is_terminal():
                await task.failed(
                    f"gave up after {adv.deliveries} deliveries", code="max_deliveries"
                )


def summarize(result: ExecutionCompleted, chart: ChartCompleted | None) -> str:
    """One line for the chat: the answer's size, or the value itself, and the chart."""
    if result.row_count == 1 and len(result.columns) == 1 and result.rows:
        shown = result.display_rows[0][0] if result.display_rows else result.rows[0][0]
        head = f"{result.columns[0].name} = {shown}"
    else:
        head = f"{result.row_count} row{'s' if result.row_count != 1 else ''}"
    if chart is None or chart.kind in ("none", "number"):
        return head  # a number card says no more than the value itself
    title = chart.title or "the result"
    return f"{head}; {chart.kind} chart of {title}"


async def run_worker(
    settings: ChartWorkerSettings, stop: asyncio.Event, ready: asyncio.Event | None = None
) -> None:
    """Run until `stop` is set: both consumers and their dead-letter watches."""

    async def build(bus: Bus, _: AsyncExitStack) -> list[Consumer]:
        return ChartWorker(bus, settings).consumers()

    await run_pipeline_worker(WORKER, settings, build, stop, ready)
