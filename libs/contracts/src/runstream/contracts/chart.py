"""The chart-task aggregate: subject `<prefix>.<session_id>.chart.<task_id>.<type>`.

The pipeline's own chart (step `chart`) is a chart task too (`auto=True`), so every
chart, automatic or ad hoc, is stored and served the same way.
"""

from __future__ import annotations

from typing import Any

from runstream.contracts.base import Event


class ChartEvent(Event, frozen=True, kw_only=True):
    task_id: str
    message_id: str


class ChartRequested(ChartEvent, frozen=True, kw_only=True, tag="chart_requested"):
    owner: str = ""
    adjustment_query: str | None = None
    force_create: bool = False
    auto: bool = False


class ChartStarted(ChartEvent, frozen=True, kw_only=True, tag="chart_started"):
    eta_ms: int | None = None


class ChartProgressed(ChartEvent, frozen=True, kw_only=True, tag="chart_progressed"):
    progress: float  # 0..100 over the whole task
    current_step: str
    step_progress: float = 0.0  # 0..100 within current_step
    eta_ms: int | None = None


class ChartCompleted(ChartEvent, frozen=True, kw_only=True, tag="chart_completed"):
    chart_id: str
    kind: str  # "bar" | "line" | "scatter" | "number" | "none"
    title: str = ""
    # Vega-Lite v5 for bar/line/scatter; for "number" (a big-number card, no SVG):
    # {"cards": [{column, label, value, display, primary}], "context": [{column, label,
    # display}]}.
    spec: dict[str, Any] | None = None
    svg: str | None = None
    duration_ms: int = 0


class ChartFailed(ChartEvent, frozen=True, kw_only=True, tag="chart_failed"):
    error: str
    code: str = "failed"


class ChartCancelRequested(ChartEvent, frozen=True, kw_only=True, tag="chart_cancel_requested"):
    requested_by: str = ""


class ChartCancelled(ChartEvent, frozen=True, kw_only=True, tag="chart_cancelled"):
    pass


ChartEventT = (
    ChartRequested
    | ChartStarted
    | ChartProgressed
    | ChartCompleted
    | ChartFailed
    | ChartCancelRequested
    | ChartCancelled
)
CHART_EVENTS: tuple[type[ChartEvent], ...] = (
    ChartRequested,
    ChartStarted,
    ChartProgressed,
    ChartCompleted,
    ChartFailed,
    ChartCancelRequested,
    ChartCancelled,
)
