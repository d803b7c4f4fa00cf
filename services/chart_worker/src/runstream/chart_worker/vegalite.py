"""A chart plan as a Vega-Lite v5 spec (or big-number cards), rendered to SVG.

Readable by construction: the title is the plan's interpretation (wrapped), axis and
legend titles are said as a reader would ("Total revenue", "Share of total (%)"), fonts
are 12-16 px, time axes read at their grain ("2024", "Q1 2024", "Jan 2024"), numbers have
thousands separators and percentages a % sign, and x labels are rotated only when they
would collide. Specs use inline `data.values` and a fixed 640 px width (vl-convert cannot
size to a container).
"""

from __future__ import annotations

import asyncio
import re
import textwrap
from datetime import date
from typing import Any

import vl_convert

from runstream.chart_worker.model import Adjustment, Col, Plan, Result, answer_column

VEGA_LITE_SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"
WIDTH, HEIGHT = 640, 360
MAX_CARDS = 4
TITLE_CHARS = 70
CHAR_PX = 7.2  # the mean width of a character at LABEL_FONT, in pixels
LABEL_FONT, TITLE_FONT, AXIS_TITLE_FONT = 12, 16, 13


def human(name: str) -> str:
    """A column name as a reader would say it: 'total_revenue' -> 'Total revenue'."""
    if name == "percent_of_total":
        return "Share of total (%)"
    if m := re.fullmatch(r"percent_of_(\w+)", name):
        return f"Share within {m.group(1).replace('_', ' ')} (%)"
    if name == "percent_change":
        return "Change (%)"
    if name == "percent":
        return "Percent"
    if m := re.fullmatch(r"p(\d{1,2})_(\w+)", name):
        return f"{_ordinal(int(m.group(1)))} percentile of {m.group(2).replace('_', ' ')}"
    if m := re.fullmatch(r"distinct_(\w+)", name):
        return f"Distinct {m.group(1).replace('_', ' ')} values"
    words = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).replace("_", " ").split()
    text = " ".join(words) or name
    return text[:1].upper() + text[1:]


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def chart_title(result: Result, plan: Plan) -> str:
    if result.interpretation:
        return result.interpretation.rstrip(".")
    if plan.kind == "number":
        return ", ".join(human(c.name) for c in result.by_role("number")[:MAX_CARDS])
    assert plan.x is not None and plan.y is not None
    joiner = "against" if plan.kind == "scatter" else "by"
    title = f"{human(plan.y.name)} {joiner} {human(plan.x.name).lower()}"
    if plan.series is not None:
        title += f" and {human(plan.series.name).lower()}"
    return title


def _field(name: str) -> str:
    """Vega-Lite reads '.' and '[' in a field as a path; escape them to mean the name."""
    return re.sub(r"([.\[\]\\])", r"\\\1", name)


def _data(result: Result, plan: Plan, adj: Adjustment) -> list[dict[str, Any]]:
    """One object per row: measures raw, periods as ISO dates, categories as displayed."""
    assert plan.y is not None
    y = plan.y
    drawn = [c for c in (plan.x, plan.series) if c is not None]
    out = []
    for i in range(result.rows):
        if y.raw[i] is None:
            continue
        row: dict[str, Any] = {y.name: y.raw[i]}
        for c in drawn:
            if c is y:
                continue
            if plan.kind == "line" and c is plan.x:
                row[c.name] = _iso(c.raw[i])
            elif plan.kind == "scatter":
                row[c.name] = c.raw[i]
            else:
                row[c.name] = c.shown[i] if c.shown[i] is not None else "(none)"
        out.append(row)
    if adj.top is not None:
        out = sorted(out, key=lambda d: d[y.name], reverse=not adj.bottom)[: adj.top]
    return out


def _iso(value: Any) -> Any:
    if isinstance(value, int) and 1000 <= value <= 9999:
        return f"{value}-01-01"  # a year held as a number
    if isinstance(value, date):
        return value.isoformat()
    return value


_TIME_UNITS: dict[str, tuple[str, dict[str, Any]]] = {
    "year": ("utcyear", {"format": "%Y", "tickCount": {"interval": "year", "step": 1}}),
    "quarter": ("utcyearquarter", {
        "labelExpr": "'Q' + utcquarter(datum.value) + ' ' + utcyear(datum.value)",
        "tickCount": {"interval": "month", "step": 3}}),
    "month": ("utcyearmonth", {"format": "%b %Y"}),
    "week": ("utcyearmonthdate", {"format": "%b %-d, %Y"}),
    "day": ("utcyearmonthdate", {"format": "%b %-d, %Y"}),
}  # fmt: skip


def _quantitative(col: Col, values: list[Any], *, stacked: bool = False) -> dict[str, Any]:
    enc: dict[str, Any] = {"field": _field(col.name), "type": "quantitative",
                           "title": human(col.name)}  # fmt: skip
    numbers = [abs(v) for v in values if isinstance(v, int | float)]
    if col.percent:
        enc["axis"] = {"labelExpr": "format(datum.value, ',.1~f') + '%'"}
    elif numbers and max(numbers) >= 1_000_000:
        enc["axis"] = {"format": "~s"}
    else:
        enc["axis"] = {"format": ",.2~f"}
    if stacked:
        enc["stack"] = "zero"
    return enc


def _time_x(col: Col, points: int) -> dict[str, Any]:
    enc: dict[str, Any] = {"field": _field(col.name), "type": "temporal",
                           "title": human(col.name)}  # fmt: skip
    axis: dict[str, Any] = {"labelAngle": 0, "labelOverlap": True}
    if col.grain in _TIME_UNITS:
        unit, extra = _TIME_UNITS[col.grain]
        enc["timeUnit"] = unit
        axis.update(extra)
        if col.grain == "month" and points <= 12:
            axis["tickCount"] = {"interval": "month", "step": 1}
    enc["axis"] = axis
    return enc


def _discrete(col: Col, plan: Plan, result: Result, adj: Adjustment,
              channel: str) -> dict[str, Any]:  # fmt: skip
    assert plan.y is not None
    enc: dict[str, Any] = {"field": _field(col.name), "type": "ordinal" if col.role != "category"
                           else "nominal", "title": human(col.name)}  # fmt: skip
    measure_channel = "x" if channel == "y" else "y"
    order = _bar_order(col, result, adj)
    if order is None:
        enc["sort"] = None  # the rows' own order: time order, the week, the plan's order
    elif plan.series is None:
        enc["sort"] = f"-{measure_channel}" if order == "descending" else measure_channel
    else:
        enc["sort"] = {"field": _field(plan.y.name), "op": "sum", "order": order}
    axis: dict[str, Any] = {}
    if channel == "x":
        n = len({s for s in col.shown})
        longest = max((len(s or "") for s in col.shown), default=0)
        fits = longest * CHAR_PX <= WIDTH / max(n, 1) - 6
        axis["labelAngle"] = 0 if fits else -45
    else:
        axis["labelLimit"] = 220
    enc["axis"] = axis
    return enc


def _bar_order(col: Col, result: Result, adj: Adjustment) -> str | None:
    """'descending'/'ascending' by the measure, or None to keep the rows' order."""
    if adj.order is not None:
        return adj.order
    if col.role in ("time", "cycle"):
        return None
    shape = result.shape
    if shape is None or shape.order is None:
        return "descending"
    if shape.order == "measure":
        return "descending" if shape.descending else "ascending"
    return None


def vega_lite_spec(result: Result, plan: Plan, adj: Adjustment) -> dict[str, Any]:
    assert plan.x is not None and plan.y is not None
    data = _data(result, plan, adj)
    y_values = [d[plan.y.name] for d in data]
    height = HEIGHT
    encoding: dict[str, Any]
    if plan.kind == "line":
        mark: dict[str, Any] = {"type": "line", "point": True, "strokeWidth": 2}
        x_enc = _time_x(plan.x, plan.x.distinct)
        if adj.order is not None:
            x_enc["sort"] = adj.order
        encoding = {"x": x_enc, "y": _quantitative(plan.y, y_values)}
    elif plan.kind == "bar":
        mark = {"type": "bar"}
        value = _quantitative(plan.y, y_values, stacked=plan.stacked)
        if plan.horizontal:
            encoding = {"y": _discrete(plan.x, plan, result, adj, "y"), "x": value}
            bars = plan.x.distinct * (1 if plan.series is None or plan.stacked
                                      else plan.series.distinct)  # fmt: skip
            height = max(160, min(22 * bars + 40, 720))
        else:
            encoding = {"x": _discrete(plan.x, plan, result, adj, "x"), "y": value}
        if plan.series is not None and not plan.stacked:
            offset = "yOffset" if plan.horizontal else "xOffset"
            encoding[offset] = {"field": _field(plan.series.name), "type": "nominal"}
    else:  # scatter
        mark = {"type": "point", "filled": True, "size": 60}
        x_values = [d[plan.x.name] for d in data]
        encoding = {"x": _quantitative(plan.x, x_values), "y": _quantitative(plan.y, y_values)}
        encoding["x"]["scale"] = encoding["y"]["scale"] = {"zero": False}
    if plan.series is not None:
        encoding["color"] = {
            "field": _field(plan.series.name),
            "type": "ordinal" if plan.series.role == "time" else "nominal",
            "title": human(plan.series.name),
            "legend": {"title": human(plan.series.name), "orient": "right"},
        }  # fmt: skip
    return {
        "$schema": VEGA_LITE_SCHEMA,
        "title": {"text": textwrap.wrap(chart_title(result, plan), TITLE_CHARS) or [""],
                  "anchor": "start", "fontSize": TITLE_FONT},
        "width": WIDTH,
        "height": height,
        "data": {"values": data},
        "mark": mark,
        "encoding": encoding,
        "config": _CONFIG,
    }


_CONFIG: dict[str, Any] = {
    "font": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
    "axis": {"labelFontSize": LABEL_FONT, "titleFontSize": AXIS_TITLE_FONT,
             "titleFontWeight": "normal", "grid": True, "gridOpacity": 0.5},
    "legend": {"labelFontSize": LABEL_FONT, "titleFontSize": AXIS_TITLE_FONT,
               "titleFontWeight": "normal"},
    "view": {"stroke": None},
}  # fmt: skip


def number_cards(result: Result) -> dict[str, Any]:
    """A big-number card per measure of a one-row result, with its row's labels."""
    numbers = result.by_role("number")
    primary = answer_column(result)
    # The number that answers the question comes first; the others follow in column order.
    ordered = [c for c in numbers if c is primary] + [c for c in numbers if c is not primary]
    cards = [
        {"column": c.name, "label": human(c.name), "value": c.raw[0],
         "display": c.shown[0] if c.shown[0] is not None else "—", "primary": c is primary}
        for c in ordered[:MAX_CARDS]
    ]  # fmt: skip
    context = [
        {"column": c.name, "label": human(c.name), "display": c.shown[0]}
        for c in result.cols if c.role != "number" and c.shown[0] is not None
    ]  # fmt: skip
    return {"cards": cards, "context": context}


def render_svg(spec: dict[str, Any]) -> str:
    """Vega-Lite → SVG with vl-convert (an embedded Deno/V8: CPU-bound, no network)."""
    return str(vl_convert.vegalite_to_svg(spec))


async def render_svg_async(spec: dict[str, Any]) -> str:
    return await asyncio.to_thread(render_svg, spec)
