"""The three workers in-process on one real JetStream: a question becomes a script, a
result and a chart, every step reported in order; redelivery, cancel, retries and dead
letters behave as the contract says."""

from __future__ import annotations

import asyncio
import csv
import io
import os
from collections import defaultdict
from functools import partial
from typing import Any

import pytest

from runstream.analysis_worker.planner import Plan, PlanningContext
from runstream.analysis_worker.settings import AnalysisWorkerSettings
from runstream.analysis_worker.worker import AnalysisWorker
from runstream.analysis_worker.worker import run_worker as run_analysis
from runstream.bus import Bus, Delivery, SessionAggregate
from runstream.chart_worker.settings import ChartWorkerSettings
from runstream.chart_worker.worker import ChartWorker
from runstream.chart_worker.worker import run_worker as run_chart
from runstream.contracts import (
    PIPELINE_STEPS,
    AnalysisRequested,
    AnalysisSettled,
    CancelRequested,
    ChartCompleted,
    ExecutionCompleted,
    LogAppended,
    ScriptGenerated,
    StepCompleted,
    StepStarted,
    new_id,
    utcnow,
)
from runstream.execution_worker.settings import ExecutionWorkerSettings
from runstream.execution_worker.worker import ExecutionWorker
from runstream.execution_worker.worker import run_worker as run_execution
from runstream.pipeline import run_pipeline_worker
from runstream.testing import wait_until
from tests.integration.pipeline_support import (
    FakeChatCompletions,
    ask,
    running,
    sales_csv,
    session_events,
    session_with_csv,
    wait_settled,
    worker_settings,
)


def expected_average_revenue_by_region(data: bytes) -> dict[str, float]:
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for row in csv.DictReader(io.StringIO(data.decode())):
        sums[row["region"]] += float(row["revenue"])
        counts[row["region"]] += 1
    return {region: sums[region] / counts[region] for region in sums}


def all_workers(bus: Bus, **analysis: Any) -> list[Any]:
    planner = analysis.pop("planner_impl", None)
    return [
        partial(run_analysis, worker_settings(AnalysisWorkerSettings, bus, **analysis),
                planner=planner),
        partial(run_execution, worker_settings(ExecutionWorkerSettings, bus)),
        partial(run_chart, worker_settings(ChartWorkerSettings, bus)),
    ]


def step_trail(events: list[Any]) -> list[tuple[str, str]]:
    return [
        (type(e).__name__, e.step) for e in events if isinstance(e, StepStarted | StepCompleted)
    ]


EXPECTED_TRAIL = [
    (kind, step) for step in PIPELINE_STEPS for kind in ("StepStarted", "StepCompleted")
]


async def test_a_question_becomes_script_result_and_chart_with_every_step_in_order(bus: Bus):
    data = sales_csv()
    sid = await session_with_csv(bus, data)
    async with running(*all_workers(bus)):
        mid = await ask(bus, sid, "average revenue by region")
        settled = await wait_settled(bus, sid, mid)
    events = await session_events(bus, sid)

    assert settled.status == "completed", settled.error
    assert step_trail(events) == EXPECTED_TRAIL
    starts = [e for e in events if isinstance(e, StepStarted)]
    assert [(e.index, e.total) for e in starts] == [(i, 5) for i in range(1, 6)]
    [script] = [e for e in events if isinstance(e, ScriptGenerated)]
    assert script.planner == "rules" and "avg" in script.sql.lower()
    [result] = [e for e in events if isinstance(e, ExecutionCompleted)]
    got = {row[0]: float(row[1]) for row in result.rows}
    expected = expected_average_revenue_by_region(data)
    assert got.keys() == expected.keys()
    for region, value in expected.items():
        assert got[region] == pytest.approx(value, abs=0.01)
    [chart] = [e for e in events if isinstance(e, ChartCompleted)]
    assert chart.kind == "bar" and chart.svg is not None and "<svg" in chart.svg
    assert isinstance(events[-1], AnalysisSettled) and events[-1].message_id == mid
    assert "4 rows" in (events[-1].summary or "")
    ids = [e.event_id for e in events]
    assert len(ids) == len(set(ids)), "no event is stored twice"


async def fetch_one(bus: Bus, subject: str, kind: type = object) -> Delivery:
    """The first stored event of `kind` on `subject`, as a consumer would be handed it."""
    psub = await bus.js.pull_subscribe(subject, stream=bus.stream)
    try:
        while True:
            [msg] = await psub.fetch(1, timeout=5)
            delivery = Delivery(msg)
            if isinstance(delivery.event, kind):
                return delivery
    finally:
        await psub.unsubscribe()


async def test_handling_each_stage_twice_on_the_same_event_duplicates_nothing(bus: Bus):
    data = sales_csv()
    sid = await session_with_csv(bus, data)
    mid = await ask(bus, sid, "average revenue by region")
    analysis = AnalysisWorker(bus, worker_settings(AnalysisWorkerSettings, bus))
    execution = ExecutionWorker(bus, worker_settings(ExecutionWorkerSettings, bus))
    charts = ChartWorker(bus, worker_settings(ChartWorkerSettings, bus))
    s = bus.subjects

    requested = await fetch_one(bus, s.session(sid), AnalysisRequested)
    await analysis.handle(requested)
    await analysis.handle(requested)
    script = await fetch_one(bus, s.message(sid, mid, "script_generated"))
    await execution.handle(script)
    await execution.handle(script)
    result = await fetch_one(bus, s.message(sid, mid, "execution_completed"))
    await charts.handle(result)
    await charts.handle(result)

    events = await session_events(bus, sid)
    assert step_trail(events) == EXPECTED_TRAIL
    for kind in (ScriptGenerated, ExecutionCompleted, ChartCompleted, AnalysisSettled):
        assert sum(isinstance(e, kind) for e in events) == 1, kind.__name__
    settled = events[-1]
    assert isinstance(settled, AnalysisSettled) and settled.status == "completed"


class FixedPlanner:
    """A planner that always answers with one query (here: one that never ends)."""

    name = "fixed"

    def __init__(self, sql: str) -> None:
        self.sql = sql

    async def plan(self, ctx: PlanningContext) -> Plan:
        return Plan(sql=self.sql, interpretation="A deliberately slow query.",
                    explanation="a deliberately slow query", planner=self.name)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


async def test_cancel_during_execution_kills_the_child_promptly(bus: Bus):
    sid = await session_with_csv(bus, sales_csv())
    slow = (
        "SELECT count(*) FROM range(100000000) a, range(100000) b"
        " WHERE (a.range + b.range) % 7 = 3"
    )
    executions: list[ExecutionWorker] = []
    runners = all_workers(bus, planner_impl=FixedPlanner(slow))
    settings = worker_settings(ExecutionWorkerSettings, bus, sandbox_timeout_s=120.0)
    runners[1] = partial(run_pipeline_worker, "execution-worker", settings,
                         ExecutionWorker.builder(settings, out=executions))
    async with running(*runners):
        mid = await ask(bus, sid, "count everything, slowly")

        async def child() -> int | None:
            return executions[0].children.get(mid) if executions else None

        pid = await wait_until(child, timeout=20, interval=0.01)
        assert alive(pid)
        await bus.publish(CancelRequested(
            event_id=new_id(), at=utcnow(), session_id=sid, message_id=mid, requested_by="alice",
        ))
        await SessionAggregate(bus).settle(sid, mid, "cancelled")
        cancelled_at = asyncio.get_running_loop().time()
        # The worker checks for a cancel every few hundred ms; the deadline leaves room
        # for a loaded CI machine (latency is a benchmark's business, not this test's).
        await wait_until(lambda: _async(not alive(pid)), timeout=5.0, interval=0.01)
        gone_after = asyncio.get_running_loop().time() - cancelled_at
        await wait_until(lambda: _async(mid not in executions[0].children), timeout=5)
    events = await session_events(bus, sid)
    assert gone_after < 5.0
    mine = [e for e in events if getattr(e, "message_id", None) == mid]
    assert not any(isinstance(e, ExecutionCompleted) for e in mine)
    assert not any(isinstance(e, StepCompleted) and e.step == "execute" for e in mine)
    settles = [e for e in mine if isinstance(e, AnalysisSettled)]
    assert [e.status for e in settles] == ["cancelled"]
    await ask(bus, sid, "average revenue by region")  # the session is free at once


async def _async(value: Any) -> Any:
    return value


AVG_SQL = "SELECT region, avg(revenue) AS avg_revenue FROM data GROUP BY region ORDER BY region"


def openai_settings(fake: FakeChatCompletions, **kw: Any) -> dict[str, Any]:
    return {"planner": "openai", "openai_base_url": fake.base_url, "openai_model": "fake",
            "openai_api_key": "test", "planner_timeout_s": 0.5, **kw}


async def test_a_planner_that_times_out_twice_completes_on_the_third_delivery(bus: Bus):
    data = sales_csv()
    sid = await session_with_csv(bus, data)
    async with FakeChatCompletions(stalls=2, sql=AVG_SQL) as fake:
        async with running(*all_workers(bus, **openai_settings(fake, max_deliver=4))):
            mid = await ask(bus, sid, "average revenue by region")
            settled = await wait_settled(bus, sid, mid, timeout=30)
        assert fake.requests >= 3
    events = await session_events(bus, sid)
    assert settled.status == "completed", settled.error
    assert step_trail(events) == EXPECTED_TRAIL
    warnings = [e.text for e in events if isinstance(e, LogAppended) and e.level == "warning"]
    assert [w.endswith(f"(attempt {n} of 4)") for n, w in enumerate(warnings, 1)] == [True] * 2
    [script] = [e for e in events if isinstance(e, ScriptGenerated)]
    assert script.planner == "openai" and script.sql == AVG_SQL


async def test_a_planner_that_always_times_out_is_dead_lettered_and_settled_failed(bus: Bus):
    sid = await session_with_csv(bus, sales_csv())
    async with FakeChatCompletions(stalls=1000, sql=AVG_SQL) as fake:
        async with running(*all_workers(bus, **openai_settings(fake, max_deliver=3))):
            mid = await ask(bus, sid, "average revenue by region")
            settled = await wait_settled(bus, sid, mid, timeout=30)
        assert fake.requests >= 3
    assert settled.status == "failed"
    assert settled.error is not None and settled.error.code == "max_deliveries"
    assert settled.error.step == "plan"
    assert settled.dead_letter is not None
    assert settled.dead_letter.consumer == "analysis-worker"
    assert settled.dead_letter.deliveries == 3
    assert settled.dead_letter.subject == bus.subjects.session(sid)
    events = await session_events(bus, sid)
    assert sum(isinstance(e, AnalysisSettled) for e in events) == 1
