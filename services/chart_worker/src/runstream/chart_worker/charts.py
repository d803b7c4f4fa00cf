"""Choose a chart from a result's column types, as a Vega-Lite v5 spec; render it to SVG.

Rules, first match wins: a date (or ISO-date-like text) by a number is a line; a
category by a number is a bar; a number by a number is a scatter; a single value, a
single row without a category, or no usable pair is "none". An adjustment ("as a
line chart", "top 5 only", "sorted ascending") is applied on top; a kind the data
cannot carry falls back to the automatic choice, with a note saying so.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, Literal

import msgspec
import vl_convert

from runstream.contracts import Column

ChartKind = Literal["bar", "line", "scatter", "none"]
Role = Literal["number", "date", "category", "other"]

VEGA_LITE_SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"
WIDTH, HEIGHT = 640, 360
_NUMERIC = re.compile(
    r"^(TINYINT|SMALLINT|INTEGER|INT\d*|BIGINT|HUGEINT|U?(TINY|SMALL|BIG|HUGE)?INT(EGER)?"
    r"|FLOAT\d*|REAL|DOUBLE|DECIMAL|NUMERIC)\b"
)
_ISO_DATE = re.compile(
    r"^\d{4}-\d{2}(-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([+-]\d{2}:?\d{2}|Z)?)?)?$"
)


class ChartChoice(msgspec.Struct, frozen=True, kw_only=True):
    kind: ChartKind
    title: str
    spec: dict[str, Any] | None = None
    x: str | None = None
    y: str | None = None
    series: str | None = None
    notes: list[str] = msgspec.field(default_factory=list)


def column_role(column: Column, values: list[Any]) -> Role:
    t = column.type.strip().upper()
    if _NUMERIC.match(t):
        return "number"
    if t.startswith(("DATE", "TIMESTAMP", "DATETIME")):
        return "date"
    if t in ("VARCHAR", "TEXT", "STRING") or t.startswith(("VARCHAR", "ENUM")):
        present = [v for v in values if v is not None]
        if present and all(isinstance(v, str) and _ISO_DATE.match(v) for v in present):
            return "date"
        return "category"
    if t in ("BOOLEAN", "BOOL", "UUID"):
        return "category"
    return "other"


def choose_chart(
    columns: list[Column], rows: list[list[Any]], *, adjustment: str | None = None
) -> ChartChoice:
    roles = [column_role(c, [r[i] for r in rows if i < len(r)]) for i, c in enumerate(columns)]
    names = [c.name for c in columns]
    adj = _Adjustment.parse(adjustment)
    notes: list[str] = []
    by_role = {role: [n for n, r in zip(names, roles, strict=True) if r == role] for role in
               ("number", "date", "category")}  # fmt: skip
    nums, dates, cats = by_role["number"], by_role["date"], by_role["category"]

    candidates: dict[ChartKind, tuple[str, str, str | None]] = {}
    if dates and nums:
        candidates["line"] = (dates[0], nums[0], cats[0] if cats else None)
    if cats and nums:
        candidates["bar"] = (cats[0], nums[0], None)
    if len(nums) >= 2:
        candidates["scatter"] = (nums[0], nums[1], cats[0] if cats else None)
    if dates and nums and "bar" not in candidates:
        candidates["bar"] = (dates[0], nums[0], None)  # a period per bar is fine too

    auto: ChartKind = next((k for k in ("line", "bar", "scatter") if k in candidates), "none")
    if not rows or (len(rows) == 1 and (len(columns) == 1 or not cats)):
        auto = "none"
    kind = auto
    if adj.kind is not None and adj.kind != auto:
        if adj.kind in candidates and rows:
            kind = adj.kind
        else:
            notes.append(f"a {adj.kind} chart needs other columns; kept the {auto} choice")
    if kind == "none":
        reason = "a single value" if len(rows) <= 1 else "no category, date or number pair"
        return ChartChoice(kind="none", title=f"No chart: {reason}", notes=notes)

    x, y, series = candidates[kind]
    if kind == "bar" and x in dates:
        series = None
    data = [dict(zip(names, r, strict=False)) for r in rows]
    data = [d for d in data if d.get(y) is not None]
    if adj.top is not None:
        data = sorted(data, key=lambda d: d[y], reverse=not adj.bottom)[: adj.top]
    title = f"{y} by {x}" if kind != "scatter" else f"{y} against {x}"
    spec = _spec(kind, x, y, series, data, title, roles=dict(zip(names, roles, strict=True)),
                 order=adj.order)  # fmt: skip
    return ChartChoice(kind=kind, title=title, spec=spec, x=x, y=y, series=series, notes=notes)


class _Adjustment(msgspec.Struct, frozen=True):
    kind: ChartKind | None = None
    top: int | None = None
    bottom: bool = False
    order: Literal["ascending", "descending"] | None = None

    @classmethod
    def parse(cls, text: str | None) -> _Adjustment:
        t = (text or "").lower()
        kind: ChartKind | None = None
        for word, k in (
            ("line", "line"),
            ("bar", "bar"),
            ("column", "bar"),
            ("scatter", "scatter"),
        ):
            if re.search(rf"\b{word}", t):
                kind = k  # type: ignore[assignment]
                break
        top = re.search(r"\b(top|first|bottom|last)\s+(\d+)", t)
        order = None
        if re.search(r"\basc(ending)?\b|\bsmallest first\b|\blowest first\b", t):
            order = "ascending"
        elif re.search(r"\bdesc(ending)?\b|\blargest first\b|\bhighest first\b", t):
            order = "descending"
        return cls(
            kind=kind,
            top=int(top.group(2)) if top else None,
            bottom=bool(top and top.group(1) in ("bottom", "last")),
            order=order,  # type: ignore[arg-type]
        )


def _field(name: str) -> str:
    """Vega-Lite reads '.' and '[' in a field as a path; escape them to mean the name."""
    return re.sub(r"([.\[\]\\])", r"\\\1", name)


def _spec(
    kind: ChartKind,
    x: str,
    y: str,
    series: str | None,
    data: list[dict[str, Any]],
    title: str,
    *,
    roles: dict[str, Role],
    order: str | None,
) -> dict[str, Any]:
    y_enc: dict[str, Any] = {"field": _field(y), "type": "quantitative", "title": y}
    if kind == "line":
        x_enc: dict[str, Any] = {"field": _field(x), "type": "temporal", "title": x}
        if order is not None:
            x_enc["sort"] = order
        mark: dict[str, Any] = {"type": "line", "point": True, "tooltip": True}
    elif kind == "bar":
        x_type = "temporal" if roles[x] == "date" else "nominal"
        x_enc = {"field": _field(x), "type": x_type, "title": x}
        if x_type == "nominal":
            x_enc["sort"] = "y" if order == "ascending" else "-y"
        mark = {"type": "bar", "tooltip": True}
    else:
        x_enc = {"field": _field(x), "type": "quantitative", "title": x}
        mark = {"type": "point", "tooltip": True}
    encoding: dict[str, Any] = {"x": x_enc, "y": y_enc}
    if series is not None:
        encoding["color"] = {"field": _field(series), "type": "nominal", "title": series}
    return {
        "$schema": VEGA_LITE_SCHEMA,
        "title": title,
        "width": WIDTH,
        "height": HEIGHT,
        "data": {"values": data},
        "mark": mark,
        "encoding": encoding,
    }


def render_svg(spec: dict[str, Any]) -> str:
    """Vega-Lite → SVG with vl-convert (an embedded Deno/V8: CPU-bound, no network)."""
    return str(vl_convert.vegalite_to_svg(spec))


async def render_svg_async(spec: dict[str, Any]) -> str:
    return await asyncio.to_thread(render_svg, spec)
