"""The analysis worker: `analysis_requested` -> steps context, plan, script -> `script_generated`.

It consumes the session subjects (`<prefix>.*.session`) and acks every other session
event at once. Each step is reported through `StepReporter` with deterministic ids, and
a redelivery skips the steps that already completed.
"""

from __future__ import annotations

import asyncio
import contextlib

import msgspec
import structlog

from runstream.analysis_worker.planner import (
    Plan,
    Planner,
    PlannerError,
    PlanningContext,
    build_planner,
)
from runstream.analysis_worker.settings import AnalysisWorkerSettings
from runstream.bus import (
    Bus,
    ConsumerSpec,
    Delivery,
    MessageConsumer,
    Retry,
    ensure_consumer,
    watch_max_deliveries,
)
from runstream.bus.steps import (
    MessageGuard,
    StepReporter,
    Stop,
    on_max_deliveries,
    session_events,
    settle_dead_letter,
)
from runstream.bus.worker import consumer_spec, dispatch
from runstream.contracts import (
    AnalysisRequested,
    AnalysisSettled,
    AnalysisStarted,
    DatasetAttached,
    DatasetRef,
    DeadLetter,
    ErrorInfo,
    ScriptGenerated,
    SessionEvent,
    derived_id,
    utcnow,
)

logger = structlog.get_logger()

WORKER = "analysis-worker"
MAX_HISTORY = 10  # earlier (question, answer) pairs handed to the planner


class ContextError(Exception):
    """The question cannot be analysed in this session as it stands (permanent)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class AnalysisContext(msgspec.Struct, frozen=True, kw_only=True):
    planning: PlanningContext
    dataset: DatasetRef
    row_count: int


def build_context(history: list[SessionEvent], request: AnalysisRequested) -> AnalysisContext:
    """Pick the dataset and collect earlier questions and answers from the session history."""
    datasets: dict[str, DatasetAttached] = {}
    latest: DatasetAttached | None = None
    questions: dict[str, str] = {}
    qa: list[tuple[str, str]] = []
    for event in history:
        match event:
            case DatasetAttached():
                datasets[event.dataset_id] = event
                latest = event
            case AnalysisRequested() if event.message_id != request.message_id:
                questions[event.message_id] = event.question
            case AnalysisSettled(status="completed") if event.message_id in questions:
                qa.append((questions[event.message_id], event.summary or ""))
            case _:
                pass
    if request.dataset_id is not None:
        chosen = datasets.get(request.dataset_id)
        if chosen is None:
            raise ContextError(
                "dataset_not_found",
                f"dataset {request.dataset_id} is not attached to this session",
            )
    elif latest is not None:
        chosen = latest
    else:
        raise ContextError("no_dataset", "this session has no dataset: attach a dataset first")
    planning = PlanningContext(
        question=request.question,
        columns=list(chosen.columns),
        table_name=chosen.table_name,
        sample_rows=list(chosen.sample_rows),
        history=qa[-MAX_HISTORY:],
    )
    ref = DatasetRef(
        dataset_id=chosen.dataset_id,
        name=chosen.name,
        format=chosen.format,
        object_name=chosen.object_name,
        table_name=chosen.table_name,
    )
    return AnalysisContext(planning=planning, dataset=ref, row_count=chosen.row_count)


class AnalysisWorker:
    def __init__(
        self, bus: Bus, settings: AnalysisWorkerSettings, planner: Planner | None = None
    ) -> None:
        self.bus = bus
        self.settings = settings
        self.planner = planner or build_planner(
            settings.planner,
            openai_base_url=settings.openai_base_url,
            openai_model=settings.openai_model,
            openai_api_key=settings.openai_api_key,
            timeout_s=settings.planner_timeout_s,
        )

    def spec(self) -> ConsumerSpec:
        return consumer_spec(self.settings, self.bus.subjects.all_sessions)

    async def handle(self, delivery: Delivery) -> None:
        """Other session events are not ours: `dispatch` acks them at once."""

        async def analyse(event: AnalysisRequested, guard: MessageGuard,
                          steps: StepReporter) -> None:
            await self.analyse(event, guard, steps, delivery)

        await dispatch(self.bus, delivery, AnalysisRequested, analyse)

    async def analyse(
        self,
        request: AnalysisRequested,
        guard: MessageGuard,
        steps: StepReporter,
        delivery: Delivery,
    ) -> None:
        sid, mid = request.session_id, request.message_id
        done_subject = self.bus.subjects.message(sid, mid, "script_generated")
        if await self.bus.get_last_for_subject(done_subject) is not None:
            return  # a previous delivery finished the work; only its ack was lost

        await guard.check("context")
        await steps.publish(
            AnalysisStarted(
                event_id=derived_id(mid, steps.attempt, "analysis_started"),
                at=utcnow(),
                session_id=sid,
                message_id=mid,
                attempt=steps.attempt,
                worker=WORKER,
            )
        )
        done = await steps.last_completed()

        # 1. context ---------------------------------------------------------------------
        if done < 1:
            await steps.started("context")
        try:
            ctx = build_context(await session_events(self.bus, sid), request)
        except ContextError as exc:
            await self._fail(guard, steps, "context", exc.code, exc.detail)
            return
        if done < 1:
            earlier = len(ctx.planning.history)
            await steps.completed(
                "context",
                text=(
                    f"Dataset {ctx.dataset.name}: {len(ctx.planning.columns)} columns, "
                    f"{ctx.row_count} rows; {earlier} earlier answer(s) in this session"
                ),
            )

        # 2. plan ------------------------------------------------------------------------
        await guard.check("plan")
        if done < 2:
            await steps.started("plan")
        plan = await self._plan(ctx.planning, guard, steps, delivery)
        if plan is None:
            return
        if done < 2:
            await steps.completed("plan", text=f"Plan ({plan.planner}): {plan.explanation}")

        # 3. script ----------------------------------------------------------------------
        await guard.check("script")
        if done < 3:
            await steps.started("script")
            await steps.completed("script", text="DuckDB script ready")
        # The result goes out after its step_completed, so the next stage's step_started
        # always follows it on the message subject; a crash in between is healed by the
        # redelivery (script_generated missing -> it is published then).
        await steps.publish(
            ScriptGenerated(
                event_id=steps.event_id("script", "script_generated"),
                at=utcnow(),
                session_id=sid,
                message_id=mid,
                attempt=steps.attempt,
                sql=plan.sql,
                explanation=plan.explanation,
                planner=plan.planner,
                dataset=ctx.dataset,
                question=request.question,
            )
        )

    async def _plan(
        self,
        planning: PlanningContext,
        guard: MessageGuard,
        steps: StepReporter,
        delivery: Delivery,
    ) -> Plan | None:
        try:
            async with guard.keep_renewed("plan"):
                if self.settings.planner_delay_s > 0:
                    await _hold(guard, self.settings.planner_delay_s)
                return await self.planner.plan(planning)
        except PlannerError as exc:
            if not exc.retryable:
                await self._fail(guard, steps, "plan", exc.code, exc.detail)
                return None
            n, most = delivery.num_delivered, self.settings.max_deliver
            await steps.log(
                "plan", f"{exc.detail} (attempt {n} of {most})", level="warning", key=f"retry-{n}"
            )
            if most > 0 and n >= most:
                # Last delivery: settle now rather than rely on the advisory alone, which
                # is core NATS and lost if no worker listens at that moment.
                await settle_dead_letter(
                    self.bus,
                    delivery.event,
                    DeadLetter(
                        consumer=self.settings.durable,
                        stream_seq=delivery.seq,
                        deliveries=n,
                        subject=delivery.subject,
                    ),
                    reason=exc.detail,
                )
            raise Retry(exc.detail) from exc

    async def _fail(
        self, guard: MessageGuard, steps: StepReporter, step: str, code: str, detail: str
    ) -> None:
        await steps.failed(step, detail, code=code)
        await guard.settle("failed", error=ErrorInfo(code=code, message=detail, step=step))


async def _hold(guard: MessageGuard, seconds: float) -> None:
    """The planner delay (a test/demo knob). A cancel ends it, checked twice a second, so a
    held analysis can be cancelled like any other instead of pinning its worker."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        await asyncio.sleep(min(0.5, left))
        if await guard.cancel_requested():
            raise Stop("cancel requested")


async def run_worker(
    settings: AnalysisWorkerSettings,
    stop: asyncio.Event,
    ready: asyncio.Event | None = None,
    *,
    planner: Planner | None = None,
) -> None:
    """Run until `stop` is set: connect, consume, watch dead letters; shut down in reverse."""
    async with Bus.connect(settings.bus(), name=WORKER) as bus:
        await bus.provision()
        worker = AnalysisWorker(bus, settings, planner)
        spec = worker.spec()
        await ensure_consumer(bus, spec)

        async def exhausted(adv, raw) -> None:  # type: ignore[no-untyped-def]
            await on_max_deliveries(bus, adv, raw)

        advisory = await watch_max_deliveries(bus, spec.durable, exhausted)
        consumer = asyncio.create_task(MessageConsumer(bus, spec, worker.handle).run(stop))
        if ready is not None:
            ready.set()
        try:
            await consumer
        finally:
            with contextlib.suppress(Exception):
                await advisory.unsubscribe()
