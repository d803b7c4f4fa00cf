"""Choose the chart that fits a result (model.py reads it, vegalite.py draws it).

The result's shape (from the plan, when there is one) and its display formats (from the
execution worker) say what each column is; without them the column types do. The rules,
first match wins (docs/engine.md, "Charts"):

- no rows, or whole records (a listing, "top 5 orders") -> none: a chart would join
  unrelated rows;
- one row -> a big-number card (kind "number"), one card per measure, no SVG;
- a time dimension at day/week/month/quarter/year with at least 3 periods -> a line at
  that grain (years read as years), one coloured line per category with a legend;
- one or two categories (fewer than 3 periods count as categories) -> bars: sorted as
  the plan orders the rows (largest first by default), horizontal when the labels would
  collide, grouped with a colour legend for the second dimension (stacked when there are
  too many bars and the measure adds up);
- two numbers and nothing else -> a scatter;
- anything else -> none.

The measure drawn is the one that answers the question (a share's percentage, a
comparison's change). Titles come from the plan's interpretation; labels are rotated
only when they would collide. An adjustment ("as a line chart", "top 5 only", "sorted
ascending") applies on top; a kind the data cannot carry keeps the automatic choice,
with a note saying so.
"""

from __future__ import annotations

from typing import Any

import msgspec

from runstream.chart_worker.model import (
    Adjustment,
    ChartKind,
    Col,
    Plan,
    Result,
    answer_column,
    column_role,
    read_result,
)
from runstream.chart_worker.vegalite import (
    CHAR_PX,
    WIDTH,
    chart_title,
    human,
    number_cards,
    render_svg,
    render_svg_async,
    vega_lite_spec,
)
from runstream.contracts import Column, ColumnFormat, ResultShape

__all__ = ["ChartChoice", "ChartKind", "choose_chart", "column_role", "human", "render_svg",
           "render_svg_async"]  # fmt: skip

MIN_LINE_POINTS = 3  # two periods are two bars, not a trend
MAX_GROUPED_BARS = 60  # beyond this, grouped bars are unreadable: stack them (if they add up)


class ChartChoice(msgspec.Struct, frozen=True, kw_only=True):
    kind: ChartKind
    title: str
    spec: dict[str, Any] | None = None
    x: str | None = None
    y: str | None = None
    series: str | None = None
    notes: list[str] = msgspec.field(default_factory=list)


def choose_chart(
    columns: list[Column],
    rows: list[list[Any]],
    *,
    adjustment: str | None = None,
    shape: ResultShape | None = None,
    formats: list[ColumnFormat] | None = None,
    display_rows: list[list[str | None]] | None = None,
    interpretation: str = "",
) -> ChartChoice:
    result = read_result(columns, rows, shape, formats or [], display_rows or [], interpretation)
    adj = Adjustment.parse(adjustment)
    plan = _plan(result, adj)
    notes = result.notes
    if adj.kind is not None and adj.kind != plan.kind:
        forced = _plan(result, adj, force=adj.kind)
        if forced.kind == adj.kind:
            plan = forced
        else:
            notes.append(f"a {adj.kind} chart needs other columns; kept the {plan.kind} choice")
    if plan.kind == "none":
        return ChartChoice(kind="none", title=f"No chart: {plan.reason}", notes=notes)
    if plan.kind == "number":
        spec = number_cards(result)
        return ChartChoice(kind="number", title=chart_title(result, plan), spec=spec, notes=notes)
    spec = vega_lite_spec(result, plan, adj)
    return ChartChoice(kind=plan.kind, title=chart_title(result, plan), spec=spec,
                       x=plan.x.name if plan.x else None, y=plan.y.name if plan.y else None,
                       series=plan.series.name if plan.series else None,
                       notes=notes)  # fmt: skip


def _plan(result: Result, adj: Adjustment, force: ChartKind | None = None) -> Plan:
    shape = result.shape
    numbers = result.by_role("number")
    if result.rows == 0:
        return Plan("none", "no rows")
    records = shape.kind == "rows" if shape is not None else len(result.cols) > 3
    if records and force is None:
        return Plan("none", "these are individual records, and a chart would join "
                             "unrelated rows")  # fmt: skip
    if result.rows == 1 and force is None:
        if numbers:
            return Plan("number")
        return Plan("none", "a single row without a number")
    y = answer_column(result)
    if y is None:
        return Plan("none", "no number to draw")
    times = [c for c in result.by_role("time") if c.distinct >= MIN_LINE_POINTS
             and (force == "line" or _timeline(result, c))]  # fmt: skip
    dims = [c for c in result.cols if c.role in ("time", "cycle", "category") and c is not y]
    if times and force in (None, "line"):
        x = times[0]
        others = [c for c in dims if c is not x]
        return Plan("line", x=x, y=y, series=others[0] if others else None)
    if dims and force in (None, "bar"):
        if len(dims) == 1:
            return Plan("bar", x=dims[0], y=y, horizontal=_collide(dims[0], result.rows))
        first, second = dims[0], dims[1]
        # The dimension with fewer values goes to the colour legend.
        x, series = (first, second) if second.distinct <= first.distinct else (second, first)
        stacked = x.distinct * series.distinct > MAX_GROUPED_BARS and y.additive
        return Plan("bar", x=x, y=y, series=series, stacked=stacked,
                     horizontal=_collide(x, x.distinct))  # fmt: skip
    if len(numbers) >= 2 and not dims and force in (None, "scatter"):
        return Plan("scatter", x=numbers[0], y=numbers[1])
    return Plan("none", "no category, period or number pair to draw")


def _timeline(result: Result, col: Col) -> bool:
    """Do the rows follow time, rather than pick periods out of it ("top 5 days")?

    A ranked subset of periods, joined by a line, would draw a trend that is not there."""
    shape = result.shape
    if shape is not None and shape.order == "measure" and shape.limit is not None:
        return False
    present = [str(v) for v in col.raw if v is not None]
    return (shape is not None and shape.order == "time") or present == sorted(present)


def _collide(col: Col, bars: int) -> bool:
    """Would this category's labels, side by side under vertical bars, overlap?"""
    if col.role != "category":
        return False  # periods and cycles stay in reading order, left to right
    longest = max((len(s or "") for s in col.shown), default=0)
    return longest * CHAR_PX > WIDTH / max(bars, 1) - 6
