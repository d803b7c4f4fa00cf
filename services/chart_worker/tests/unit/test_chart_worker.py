"""The chart worker's handlers on a real JetStream: the chart step and ad-hoc chart tasks."""

from __future__ import annotations

from typing import Any

from runstream.bus import Bus, Delivery, SessionAggregate, read_subject
from runstream.chart_worker.settings import ChartWorkerSettings
from runstream.chart_worker.worker import ChartWorker
from runstream.contracts import (
    AnalysisSettled,
    ChartCancelled,
    ChartCancelRequested,
    ChartCompleted,
    ChartFailed,
    ChartProgressed,
    ChartRequested,
    Column,
    ColumnHint,
    ExecutionCompleted,
    ResultShape,
    decode,
    new_id,
    utcnow,
)


def settings(bus: Bus) -> ChartWorkerSettings:
    s = bus.settings
    return ChartWorkerSettings(nats_url=s.url, stream=s.stream, prefix=s.prefix,
                               datasets_bucket=s.datasets_bucket)


async def locked_message(bus: Bus) -> tuple[str, str]:
    sid, mid = new_id(), new_id()
    sessions = SessionAggregate(bus)
    await sessions.create(sid, owner="o")
    await sessions.request_analysis(sid, owner="o", question="q", message_id=mid,
                                    user_message_id=new_id())
    return sid, mid


async def publish_result(bus: Bus, sid: str, mid: str) -> None:
    await bus.publish(ExecutionCompleted(
        event_id=new_id(), at=utcnow(), session_id=sid, message_id=mid,
        columns=[Column(name="region", type="VARCHAR"), Column(name="revenue", type="DOUBLE")],
        rows=[["North", 10.0], ["South", 20.5], ["East", 7.25]], row_count=3,
    ))


async def delivery_of(bus: Bus, subject: str) -> Delivery:
    psub = await bus.js.pull_subscribe(subject, stream=bus.stream)
    try:
        [msg] = await psub.fetch(1, timeout=5)
    finally:
        await psub.unsubscribe()
    return Delivery(msg)


async def events_of(bus: Bus, sid: str) -> list[Any]:
    return [decode(m.data) for m in await read_subject(bus, bus.subjects.session_all(sid))]


async def test_the_chart_step_draws_a_bar_chart_and_settles_the_analysis_completed(bus: Bus):
    sid, mid = await locked_message(bus)
    await publish_result(bus, sid, mid)
    delivery = await delivery_of(bus, bus.subjects.message(sid, mid, "execution_completed"))
    await ChartWorker(bus, settings(bus)).handle(delivery)
    events = await events_of(bus, sid)
    [chart] = [e for e in events if isinstance(e, ChartCompleted)]
    assert chart.kind == "bar" and chart.svg is not None and "<svg" in chart.svg
    [requested] = [e for e in events if isinstance(e, ChartRequested)]
    assert requested.auto and requested.task_id == chart.task_id
    progress = [e.progress for e in events if isinstance(e, ChartProgressed)]
    assert progress == sorted(progress) and progress[-1] <= 100
    settled = events[-1]
    assert isinstance(settled, AnalysisSettled) and settled.status == "completed"
    assert settled.summary is not None and settled.summary.startswith("3 rows; bar chart")


async def request_chart(bus: Bus, sid: str, mid: str, adjustment: str | None = None) -> str:
    tid = new_id()
    await bus.publish(ChartRequested(event_id=new_id(), at=utcnow(), session_id=sid,
                                     message_id=mid, task_id=tid, adjustment_query=adjustment))
    return tid


async def test_an_ad_hoc_chart_task_reports_progress_and_completes(bus: Bus):
    sid, mid = await locked_message(bus)
    await publish_result(bus, sid, mid)
    tid = await request_chart(bus, sid, mid, "as a line chart")
    await ChartWorker(bus, settings(bus)).handle_task(
        await delivery_of(bus, bus.subjects.chart(sid, tid, "chart_requested")))
    events = [e for e in await events_of(bus, sid) if getattr(e, "task_id", None) == tid]
    steps = [e.current_step for e in events if isinstance(e, ChartProgressed)]
    assert steps[0] == "choosing" and steps[-1] == "rendering"
    assert all(e.eta_ms is not None for e in events if isinstance(e, ChartProgressed))
    assert isinstance(events[-1], ChartCompleted) and events[-1].svg


async def test_a_cancelled_chart_task_is_not_drawn(bus: Bus):
    sid, mid = await locked_message(bus)
    await publish_result(bus, sid, mid)
    tid = await request_chart(bus, sid, mid)
    await bus.publish(ChartCancelRequested(event_id=new_id(), at=utcnow(), session_id=sid,
                                           message_id=mid, task_id=tid))
    await ChartWorker(bus, settings(bus)).handle_task(
        await delivery_of(bus, bus.subjects.chart(sid, tid, "chart_requested")))
    events = [e for e in await events_of(bus, sid) if getattr(e, "task_id", None) == tid]
    assert isinstance(events[-1], ChartCancelled)
    assert not any(isinstance(e, ChartCompleted) for e in events)


async def test_a_chart_task_for_a_message_without_a_result_fails(bus: Bus):
    sid, mid = await locked_message(bus)
    tid = await request_chart(bus, sid, mid)
    await ChartWorker(bus, settings(bus)).handle_task(
        await delivery_of(bus, bus.subjects.chart(sid, tid, "chart_requested")))
    events = [e for e in await events_of(bus, sid) if getattr(e, "task_id", None) == tid]
    assert isinstance(events[-1], ChartFailed) and events[-1].code == "no_result"


async def chart_step_events(bus: Bus, result: dict[str, Any]) -> list[Any]:
    sid, mid = await locked_message(bus)
    await bus.publish(ExecutionCompleted(event_id=new_id(), at=utcnow(), session_id=sid,
                                         message_id=mid, **result))
    delivery = await delivery_of(bus, bus.subjects.message(sid, mid, "execution_completed"))
    await ChartWorker(bus, settings(bus)).handle(delivery)
    return await events_of(bus, sid)


async def test_a_single_number_is_a_card_and_the_summary_shows_its_display_form(bus: Bus):
    events = await chart_step_events(bus, {
        "columns": [Column(name="total_revenue", type="DOUBLE")],
        "rows": [[29671.929999999997]], "row_count": 1,
        "display_rows": [["29,671.93"]], "interpretation": "Sum of revenue.",
        "shape": ResultShape(columns=[ColumnHint(name="total_revenue", role="measure")],
                             value="total_revenue"),
    })  # fmt: skip
    [chart] = [e for e in events if isinstance(e, ChartCompleted)]
    assert (chart.kind, chart.svg, chart.title) == ("number", None, "Sum of revenue")
    assert chart.spec is not None and chart.spec["cards"][0]["display"] == "29,671.93"
    settled = events[-1]
    assert isinstance(settled, AnalysisSettled) and settled.status == "completed"
    assert settled.summary == "total_revenue = 29,671.93"


async def test_the_chart_step_draws_what_the_plan_says_with_its_interpretation(bus: Bus):
    rows = [[r, p, 10.0 + i] for i, (r, p) in enumerate(
        (r, p) for r in ("East", "West") for p in ("Gadget", "Widget", "Gizmo"))]
    events = await chart_step_events(bus, {
        "columns": [Column(name="region", type="VARCHAR"), Column(name="product", type="VARCHAR"),
                    Column(name="total_revenue", type="DOUBLE")],
        "rows": rows, "row_count": len(rows),
        "interpretation": "Sum of revenue for each region and product.",
        "shape": ResultShape(columns=[
            ColumnHint(name="region", role="dimension"),
            ColumnHint(name="product", role="dimension"),
            ColumnHint(name="total_revenue", role="measure", agg="sum")],
            value="total_revenue", order="label"),
    })  # fmt: skip
    [chart] = [e for e in events if isinstance(e, ChartCompleted)]
    assert chart.kind == "bar" and chart.title == "Sum of revenue for each region and product"
    assert chart.spec is not None and chart.spec["encoding"]["color"]["field"] == "region"
    assert chart.svg is not None and 'aria-roledescription="legend"' in chart.svg
