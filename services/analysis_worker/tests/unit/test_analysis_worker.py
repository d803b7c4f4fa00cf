"""The analysis worker's handler on a real JetStream: steps, script, failures, retries."""

from __future__ import annotations

from typing import Any

import pytest

from runstream.analysis_worker.planner import (
    Plan,
    PlannerUnavailable,
    PlanningContext,
    UnanswerableQuestion,
)
from runstream.analysis_worker.settings import AnalysisWorkerSettings
from runstream.analysis_worker.worker import AnalysisWorker
from runstream.bus import (
    Bus,
    Delivery,
    Retry,
    SessionAggregate,
    delete_dataset,
    put_dataset,
    read_subject,
)
from runstream.bus.consumer import MaxDeliveries
from runstream.contracts import (
    AnalysisRequested,
    AnalysisSettled,
    Column,
    LogAppended,
    ScriptGenerated,
    StepCompleted,
    StepFailed,
    StepStarted,
    decode,
    new_id,
)
from runstream.pipeline import on_max_deliveries

COLUMNS = [Column(name="region", type="VARCHAR"), Column(name="revenue", type="DOUBLE")]


def settings(bus: Bus, **kw: Any) -> AnalysisWorkerSettings:
    s = bus.settings
    return AnalysisWorkerSettings(
        nats_url=s.url,
        stream=s.stream,
        prefix=s.prefix,
        datasets_bucket=s.datasets_bucket,
        **kw,
    )


class ScriptedPlanner:
    """Answers from a list: a Plan, or an exception to raise, one per call."""

    name = "scripted"

    def __init__(self, *answers: Plan | Exception) -> None:
        self.answers = list(answers)
        self.seen: list[PlanningContext] = []

    async def plan(self, ctx: PlanningContext) -> Plan:
        self.seen.append(ctx)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


PLAN = Plan(
    sql="SELECT region, avg(revenue) FROM data GROUP BY 1",
    interpretation="Average of revenue for each region.",
    explanation="Average of revenue for each region. (revenue is averaged)",
    planner="scripted",
)


async def session(bus: Bus, *, dataset: bool = True, object_name: str = "obj") -> str:
    sid = new_id()
    sessions = SessionAggregate(bus)
    await sessions.create(sid, owner="o")
    if dataset:
        await sessions.attach_dataset(
            sid,
            dataset_id="d1",
            name="sales.csv",
            fmt="csv",
            object_name=object_name,
            size_bytes=9,
            row_count=3,
            columns=COLUMNS,
            sample_rows=[["North", 1.0]],
        )
    return sid


async def requested(bus: Bus, sid: str, question: str = "average revenue by region") -> Delivery:
    mid = new_id()
    await SessionAggregate(bus).request_analysis(
        sid, owner="o", question=question, message_id=mid, user_message_id=new_id()
    )
    psub = await bus.js.pull_subscribe(bus.subjects.session(sid), stream=bus.stream)
    try:
        while True:
            [msg] = await psub.fetch(1, timeout=5)
            delivery = Delivery(msg)
            event = delivery.event
            if isinstance(event, AnalysisRequested) and event.message_id == mid:
                return delivery
    finally:
        await psub.unsubscribe()


async def events_of(bus: Bus, sid: str) -> list[Any]:
    return [decode(m.data) for m in await read_subject(bus, bus.subjects.session_all(sid))]


async def test_a_question_goes_through_context_plan_and_script(bus: Bus):
    sid = await session(bus)
    planner = ScriptedPlanner(PLAN)
    await AnalysisWorker(bus, settings(bus), planner).handle(await requested(bus, sid))
    events = await events_of(bus, sid)
    trail = [
        (type(e).__name__, e.step) for e in events if isinstance(e, StepStarted | StepCompleted)
    ]
    assert trail == [
        ("StepStarted", "context"),
        ("StepCompleted", "context"),
        ("StepStarted", "plan"),
        ("StepCompleted", "plan"),
        ("StepStarted", "script"),
        ("StepCompleted", "script"),
    ]
    [script] = [e for e in events if isinstance(e, ScriptGenerated)]
    assert script.sql == PLAN.sql and script.dataset is not None
    assert script.dataset.object_name == "obj" and script.question.startswith("average")
    assert planner.seen[0].columns == COLUMNS and planner.seen[0].sample_rows == [["North", 1.0]]
    logs = [e.text for e in events if isinstance(e, LogAppended)]
    assert "Step 2/5: planning the query…" in logs


async def test_the_interpretation_goes_into_the_script_and_the_plan_log(bus: Bus):
    sid = await session(bus)
    worker = AnalysisWorker(bus, settings(bus), ScriptedPlanner(PLAN))
    await worker.handle(await requested(bus, sid))
    events = await events_of(bus, sid)
    [script] = [e for e in events if isinstance(e, ScriptGenerated)]
    assert script.interpretation == "Average of revenue for each region."
    logs = [e.text for e in events if isinstance(e, LogAppended) and e.step == "plan"]
    assert "Plan (scripted): Average of revenue for each region. (revenue is averaged)" in logs


async def test_the_planner_sees_the_dataset_name_and_its_category_values(bus: Bus):
    name = f"obj-{new_id()}"
    await put_dataset(bus, name, b"region,revenue\nWest,1.0\nEast,2.0\nWest,3.5\n")
    sid = await session(bus, object_name=name)
    planner = ScriptedPlanner(PLAN)
    await AnalysisWorker(bus, settings(bus), planner).handle(await requested(bus, sid))
    seen = planner.seen[0]
    assert seen.dataset_name == "sales.csv"
    assert seen.values == {"region": ["West", "East"]}, "most frequent first"


async def test_the_same_file_under_another_name_reuses_its_profile(bus: Bus):
    data = b"region,revenue\nWest,1.0\nEast,2.0\nWest,3.5\n"
    planner = ScriptedPlanner(PLAN, PLAN, PLAN)
    worker = AnalysisWorker(bus, settings(bus), planner)
    for _ in range(2):
        name = f"obj-{new_id()}"  # each upload is its own object
        await put_dataset(bus, name, data)
        await worker.handle(await requested(bus, await session(bus, object_name=name)))
    assert [s.values for s in planner.seen] == [{"region": ["West", "East"]}] * 2
    assert worker.datasets.fetches == 1 and len(worker._profiles) == 1
    # The same name put again with other bytes is profiled again, from the new bytes.
    await put_dataset(bus, name, b"region,revenue\nNorth,1.0\n")
    await worker.handle(await requested(bus, await session(bus, object_name=name)))
    assert planner.seen[-1].values == {"region": ["North"]}
    assert worker.datasets.fetches == 2 and len(worker._profiles) == 2


async def test_a_deleted_dataset_loses_its_profile_even_once_profiled(bus: Bus):
    name = f"obj-{new_id()}"
    await put_dataset(bus, name, b"region,revenue\nWest,1.0\n")
    planner = ScriptedPlanner(PLAN, PLAN)
    worker = AnalysisWorker(bus, settings(bus), planner)
    await worker.handle(await requested(bus, await session(bus, object_name=name)))
    await delete_dataset(bus, name)
    await worker.handle(await requested(bus, await session(bus, object_name=name)))
    assert [s.values for s in planner.seen] == [{"region": ["West"]}, {}]


async def test_a_dataset_that_cannot_be_read_only_loses_the_value_profile(bus: Bus):
    sid = await session(bus, object_name="missing-object")
    planner = ScriptedPlanner(PLAN)
    await AnalysisWorker(bus, settings(bus), planner).handle(await requested(bus, sid))
    assert planner.seen[0].values == {}
    assert any(isinstance(e, ScriptGenerated) for e in await events_of(bus, sid))


async def test_earlier_answers_of_the_session_are_handed_to_the_planner(bus: Bus):
    sid = await session(bus)
    first = await requested(bus, sid, "how many rows")
    await SessionAggregate(bus).settle(sid, first.event.message_id, "completed", summary="3 rows")
    planner = ScriptedPlanner(PLAN)
    await AnalysisWorker(bus, settings(bus), planner).handle(await requested(bus, sid))
    assert planner.seen[0].history == [("how many rows", "3 rows")]


async def test_a_session_without_a_dataset_fails_at_the_context_step(bus: Bus):
    sid = await session(bus, dataset=False)
    await AnalysisWorker(bus, settings(bus), ScriptedPlanner()).handle(await requested(bus, sid))
    events = await events_of(bus, sid)
    [failed] = [e for e in events if isinstance(e, StepFailed)]
    assert failed.step == "context" and "attach a dataset first" in failed.error
    settled = events[-1]
    assert isinstance(settled, AnalysisSettled) and settled.status == "failed"
    assert settled.error is not None and settled.error.code == "no_dataset"


async def test_an_unanswerable_question_settles_failed_with_the_planners_reason(bus: Bus):
    sid = await session(bus)
    planner = ScriptedPlanner(UnanswerableQuestion("I cannot tell what to compute"))
    await AnalysisWorker(bus, settings(bus), planner).handle(await requested(bus, sid))
    events = await events_of(bus, sid)
    settled = events[-1]
    assert isinstance(settled, AnalysisSettled) and settled.status == "failed"
    assert settled.error is not None
    assert (settled.error.code, settled.error.step) == ("unanswerable_question", "plan")
    assert not any(isinstance(e, ScriptGenerated) for e in events)


async def test_an_unavailable_planner_asks_for_redelivery_and_the_next_one_resumes(bus: Bus):
    sid = await session(bus)
    delivery = await requested(bus, sid)
    planner = ScriptedPlanner(PlannerUnavailable("planner timed out"), PLAN)
    worker = AnalysisWorker(bus, settings(bus), planner)
    with pytest.raises(Retry):
        await worker.handle(delivery)
    await worker.handle(delivery)  # the redelivery
    events = await events_of(bus, sid)
    starts = [e.step for e in events if isinstance(e, StepStarted)]
    assert starts == ["context", "plan", "script"], "no step is reported twice"
    assert sum(isinstance(e, ScriptGenerated) for e in events) == 1
    warnings = [e.text for e in events if isinstance(e, LogAppended) and e.level == "warning"]
    assert warnings == ["planner timed out (attempt 1 of 4)"]


async def test_a_dead_lettered_request_settles_failed_with_the_delivery_named(bus: Bus):
    sid = await session(bus)
    delivery = await requested(bus, sid)
    worker = AnalysisWorker(bus, settings(bus), ScriptedPlanner(PlannerUnavailable("down")))
    with pytest.raises(Retry):
        await worker.handle(delivery)
    raw = await bus.get_msg(delivery.seq)
    adv = MaxDeliveries(
        stream=bus.stream, consumer="analysis-worker", stream_seq=delivery.seq, deliveries=4
    )
    await on_max_deliveries(bus, adv, raw)
    await on_max_deliveries(bus, adv, raw)  # advisories may repeat: settled once
    events = await events_of(bus, sid)
    settles = [e for e in events if isinstance(e, AnalysisSettled)]
    assert len(settles) == 1 and settles[0].status == "failed"
    assert settles[0].error is not None and settles[0].error.code == "max_deliveries"
    assert "down" in settles[0].error.message and settles[0].error.step == "plan"
    assert settles[0].dead_letter is not None
    assert (settles[0].dead_letter.consumer, settles[0].dead_letter.stream_seq) == (
        "analysis-worker",
        delivery.seq,
    )
