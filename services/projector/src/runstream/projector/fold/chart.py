"""The chart-task aggregate: a task's status and progress, and the chart it produced.

Terminal task statuses are sticky. A chart that completes after its task was cancelled
is not shown; one that completes after a failure (a retried render) still is stored.
"""

from __future__ import annotations

from runstream.contracts import (
    TASK_TERMINAL,
    ChartCancelled,
    ChartCancelRequested,
    ChartCompleted,
    ChartEvent,
    ChartFailed,
    ChartProgressed,
    ChartRequested,
    ChartStarted,
)
from runstream.projector.fold.state import State, aware


def fold_chart(state: State, seq: int, event: ChartEvent) -> None:
    """One admitted chart-task event."""
    tid = event.task_id
    if isinstance(event, ChartRequested):
        if state.tasks.get(tid) is None:
            at = aware(event.at)
            state.tasks.put(tid, {
                "task_id": tid, "message_id": event.message_id, "session_id": event.session_id,
                "owner": event.owner, "status": "pending", "progress": 0.0,
                "current_step": None, "step_progress": 0.0, "eta_ms": None,
                "adjustment_query": event.adjustment_query, "force_create": event.force_create,
                "auto": event.auto, "cancel_requested": False, "error": None,
                "error_code": None, "created_at": at, "updated_at": at, "last_seq": seq,
            })  # fmt: skip
        return
    task = state.tasks.get(tid)
    assert task is not None  # admitted
    if isinstance(event, ChartCompleted):
        _completed(state, seq, event)
        return
    if task["status"] in TASK_TERMINAL:
        return
    match event:
        case ChartStarted():
            eta = event.eta_ms if event.eta_ms is not None else task["eta_ms"]
            state.tasks.change(tid, status="running", eta_ms=eta)
        case ChartProgressed():
            eta = event.eta_ms if event.eta_ms is not None else task["eta_ms"]
            state.tasks.change(
                tid, status="running", progress=float(event.progress),
                current_step=event.current_step, step_progress=float(event.step_progress),
                eta_ms=eta,
            )  # fmt: skip
        case ChartFailed():
            state.tasks.change(
                tid, status="failed", error=event.error, error_code=event.code, eta_ms=None
            )
        case ChartCancelRequested():
            state.tasks.change(tid, cancel_requested=True)
        case ChartCancelled():
            state.tasks.change(tid, status="cancelled", eta_ms=None)
        case _:
            pass  # a future chart event type: positions only


def _completed(state: State, seq: int, event: ChartCompleted) -> None:
    task = state.tasks.get(event.task_id)
    assert task is not None
    if task["status"] == "cancelled":
        return  # the user withdrew it: the late chart is not shown
    if task["status"] not in TASK_TERMINAL:
        state.tasks.change(
            event.task_id, status="completed", progress=100.0, step_progress=100.0, eta_ms=0,
            error=None,
        )  # fmt: skip
    state.charts.add({
        "chart_id": event.chart_id, "task_id": event.task_id, "message_id": event.message_id,
        "session_id": event.session_id, "kind": event.kind, "title": event.title,
        "spec": event.spec, "svg": event.svg, "duration_ms": event.duration_ms,
        "created_at": aware(event.at), "seq": seq,
    })  # fmt: skip
