"""What a result is to a chart: each column's role (a measure, a time axis, a recurring
period, a category), its grain, its raw and displayed values; the chart asked for
("as a line chart", "top 5"); and the plan a chart is drawn from.

The roles come from the plan's shape when there is one, else from the DuckDB types and
the values (ISO-like text is a date, weekday and month names recur).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from runstream.contracts import (
    TIME_AXIS_GRAINS,
    Column,
    ColumnFormat,
    ColumnHint,
    Grain,
    ResultShape,
)

ChartKind = Literal["bar", "line", "scatter", "number", "none"]
Role = Literal["number", "time", "cycle", "category", "other"]
_ADDITIVE = frozenset({"sum", "count"})
_NUMERIC = re.compile(
    r"^(TINYINT|SMALLINT|INTEGER|INT\d*|BIGINT|HUGEINT|U?(TINY|SMALL|BIG|HUGE)?INT(EGER)?"
    r"|FLOAT\d*|REAL|DOUBLE|DECIMAL|NUMERIC)\b"
)
_ISO_DATE = re.compile(
    r"^\d{4}-\d{2}(-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([+-]\d{2}:?\d{2}|Z)?)?)?$"
)
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_MONTH_NAMES = ("january", "february", "march", "april", "may", "june", "july", "august",
                "september", "october", "november", "december")  # fmt: skip
_CYCLE_WORDS = frozenset(_WEEKDAYS + _MONTH_NAMES) | {m[:3] for m in _MONTH_NAMES} | {
    d[:3] for d in _WEEKDAYS}  # fmt: skip


def column_role(column: Column, values: list[Any], hint: ColumnHint | None = None) -> Role:
    """What a column is to a chart: a measure, a time axis, a recurring period, a category."""
    if hint is not None:
        if hint.role == "measure":
            return "number"
        if hint.grain in TIME_AXIS_GRAINS:
            return "time"
        if hint.grain is not None:
            return "cycle"  # weekday, month of the year, hour of the day
        return "category"
    t = column.type.strip().upper()
    if _NUMERIC.match(t):
        return "number"
    if t.startswith(("DATE", "TIMESTAMP", "DATETIME")):
        return "time"
    if t in ("VARCHAR", "TEXT", "STRING") or t.startswith(("VARCHAR", "ENUM")):
        present = [v for v in values if v is not None]
        if present and all(isinstance(v, str) and _ISO_DATE.match(v) for v in present):
            return "time"
        if present and all(isinstance(v, str) and v.lower() in _CYCLE_WORDS for v in present):
            return "cycle"
        return "category"
    if t in ("BOOLEAN", "BOOL", "UUID"):
        return "category"
    return "other"


@dataclass
class Col:
    name: str
    role: Role
    hint: ColumnHint | None
    fmt: ColumnFormat | None
    raw: list[Any]
    shown: list[str | None]
    grain: Grain | None = None

    @property
    def distinct(self) -> int:
        return len({repr(v) for v in self.raw})

    @property
    def percent(self) -> bool:
        return bool((self.hint and self.hint.percent) or (self.fmt and self.fmt.kind == "percent"))

    @property
    def additive(self) -> bool:
        """Sums, counts and shares of a total add up, so their bars may be stacked."""
        hint = self.hint
        return hint is not None and (hint.agg in _ADDITIVE or hint.name.startswith("percent_of"))


@dataclass
class Result:
    cols: list[Col]
    rows: int
    shape: ResultShape | None
    interpretation: str
    notes: list[str] = field(default_factory=list)

    def by_role(self, *roles: Role) -> list[Col]:
        return [c for c in self.cols if c.role in roles]


def read_result(
    columns: list[Column],
    rows: list[list[Any]],
    shape: ResultShape | None,
    formats: list[ColumnFormat],
    display_rows: list[list[str | None]],
    interpretation: str,
) -> Result:
    by_name = {f.name: f for f in formats}
    usable_display = len(display_rows) == len(rows)
    cols = []
    for i, column in enumerate(columns):
        raw = [r[i] if i < len(r) else None for r in rows]
        shown = ([d[i] if i < len(d) else None for d in display_rows] if usable_display
                 else [None if v is None else str(v) for v in raw])  # fmt: skip
        hint = shape.hint(column.name) if shape is not None else None
        fmt = by_name.get(column.name)
        role = column_role(column, raw, hint)
        if role == "number" and hint is None and fmt is not None and fmt.grain == "year":
            role = "time"  # a column of years, read as years by the execution worker
        col = Col(column.name, role, hint, fmt, raw, shown)
        col.grain = _grain(col)
        cols.append(col)
    return Result(cols, len(rows), shape, interpretation.strip())


def _grain(col: Col) -> Grain | None:
    if col.role not in ("time", "cycle"):
        return None
    if col.hint is not None and col.hint.grain is not None:
        return col.hint.grain
    if col.fmt is not None and col.fmt.grain is not None:
        return col.fmt.grain
    present = [v for v in col.raw if v is not None]
    if present and all(isinstance(v, str) and re.fullmatch(r"\d{4}-\d{2}", v) for v in present):
        return "month"
    if all(isinstance(v, str) and len(v) > 10 for v in present):
        return None  # a timestamp: no truncation
    return "day" if col.role == "time" else None


def answer_column(result: Result) -> Col | None:
    """The measure that answers the question: the plan's value, else the first number."""
    numbers = result.by_role("number")
    if result.shape is not None and result.shape.value is not None:
        chosen = next((c for c in numbers if c.name == result.shape.value), None)
        if chosen is not None:
            return chosen
    return numbers[0] if numbers else None


@dataclass
class Plan:
    kind: ChartKind
    reason: str = ""
    x: Col | None = None
    y: Col | None = None
    series: Col | None = None
    horizontal: bool = False
    stacked: bool = False


class Adjustment(msgspec.Struct, frozen=True):
    kind: ChartKind | None = None
    top: int | None = None
    bottom: bool = False
    order: Literal["ascending", "descending"] | None = None

    @classmethod
    def parse(cls, text: str | None) -> Adjustment:
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
