"""The analysis worker: `analysis_requested` -> steps context, plan, script -> `script_generated`.

It consumes the session subjects (`<prefix>.*.session`) and acks every other session
event at once. Each step is reported through `StepReporter` with deterministic ids, and
a redelivery skips the steps that already completed. The context step also reads the
values of the dataset's category columns (once per content and process: kept by the
object's digest), so a question can name them ("revenue in the West").
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from contextlib import AsyncExitStack

import msgspec
import structlog

from runstream.analysis_worker.planner import (
    Plan,
    Planner,
    PlannerError,
    PlanningContext,
    build_planner,
)
from runstream.analysis_worker.planner.profile import profile_dataset
from runstream.analysis_worker.settings import AnalysisWorkerSettings
from runstream.bus import Bus, ConsumerSpec, DatasetCache, Delivery, Retry, session_events
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
    step_index,
    utcnow,
)
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

WORKER = "analysis-worker"
MAX_HISTORY = 10  # earlier (question, answer) pairs handed to the planner
PROFILES_KEPT = 32  # datasets whose column values stay cached in one process


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
        dataset_name=chosen.name,
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
        self, bus: Bus, settings: AnalysisWorkerSettings, planner: Planner | None = None,
        datasets: DatasetCache | None = None,
    ) -> None:
        self.bus = bus
        self.settings = settings
        self.planner = planner or build_planner(
            settings.planner,
            openai_base_url=settings.openai_base_url,
            openai_model=settings.openai_model,
            openai_api_key=(settings.openai_api_key.get_secret_value()
                            if settings.openai_api_key else None),
            timeout_s=settings.planner_timeout_s,
        )
        self.datasets = datasets or DatasetCache(settings.dataset_cache_bytes)
        # Profiles by (content digest, format): the same file uploaded again under another
        # name reuses its profile, and a name put again with new bytes gets a new one.
        self._profiles: OrderedDict[tuple[str, str], dict[str, list[str]]] = OrderedDict()

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
        if done < step_index("context"):
            await steps.started("context")
        try:
            ctx = build_context(await session_events(self.bus, sid), request)
        except ContextError as exc:
            await self._fail(guard, steps, "context", exc.code, exc.detail)
            return
        values = await self._values(ctx)
        ctx = msgspec.structs.replace(
            ctx, planning=msgspec.structs.replace(ctx.planning, values=values)
        )
        if done < step_index("context"):
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
        if done < step_index("plan"):
            await steps.started("plan")
        plan = await self._plan(ctx.planning, guard, steps, delivery)
        if plan is None:
            return
        if done < step_index("plan"):
            await steps.completed("plan", text=plan_log(plan))

        # 3. script ----------------------------------------------------------------------
        await guard.check("script")
        if done < step_index("script"):
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
                interpretation=plan.interpretation,
                shape=plan.shape,
            )
        )

    async def _values(self, ctx: AnalysisContext) -> dict[str, list[str]]:
        """The dataset's category values; none (the planner then reads the sample rows)
        when the dataset cannot be read here — the execution step will say why."""
        name, fmt = ctx.dataset.object_name, ctx.dataset.format
        try:
            info = await self.datasets.info(self.bus, name)
            key = (info.digest or "", fmt)
            if key[0] and key in self._profiles:
                self._profiles.move_to_end(key)
                return self._profiles[key]
            digest, data = await self.datasets.read(self.bus, name, info)
            values = await asyncio.to_thread(profile_dataset, data, fmt, ctx.planning.columns)
        except Exception as exc:  # any failure only loses the profile
            logger.warning("analysis.profile_unavailable", object_name=name, error=repr(exc))
            return {}
        if digest:  # bytes checked against their digest: the profile is theirs for good
            self._profiles[(digest, fmt)] = values
            while len(self._profiles) > PROFILES_KEPT:
                self._profiles.popitem(last=False)
        return values

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


def plan_log(plan: Plan) -> str:
    """The plan step's log line: the interpretation, then any assumption made reading it."""
    text = f"Plan ({plan.planner}): {plan.interpretation}"
    extra = plan.explanation.removeprefix(plan.interpretation).strip()
    if extra:
        text += f" {extra}" if extra.startswith("(") else f" ({extra})"
    return text


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
    """Run until `stop` is set (`planner`: another planner than the settings name)."""

    async def build(bus: Bus, _: AsyncExitStack) -> list[Consumer]:
        worker = AnalysisWorker(bus, settings, planner)
        return [Consumer(worker.spec(), worker.handle)]

    await run_pipeline_worker(WORKER, settings, build, stop, ready)
