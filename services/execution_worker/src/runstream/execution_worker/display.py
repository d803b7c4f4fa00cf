"""The display form of a result: every value as a careful analyst would write it.

`column_formats` decides, per column, how its values read — from the DuckDB type, the
values themselves and, when the planner sent one, the result's shape (a time grain, a
percentage). `display_rows` applies the formats. The raw rows are never changed: the
display form travels beside them (`execution_completed.display_rows`), so the table, the
chart and the chat show the same rounded number while `result.csv` keeps full precision.

Rules (docs/engine.md, "Display formats"):

- integers get thousands separators ("12,345"), except years, hours and ids ("2024");
- decimals are rounded to one number of places per column: 2, or 3 significant digits
  when every value is below 1, or 0 when every value is whole; DECIMAL(p, s) with s <= 2
  keeps its s places ("1,234.50");
- percentages (the plan says so, or the planner's `percent…` columns) get one decimal
  and a % sign ("34.5%");
- dates read at their grain: "2024", "Q1 2024", "Jan 2024", "Week of Jan 1, 2024",
  "Jan 5, 2024"; timestamps "Jan 5, 2024 14:05" (seconds only when some value has them);
- booleans are "Yes"/"No"; text is left as it is; null stays null.
"""

from __future__ import annotations

import json
import math
import re
from datetime import date, datetime
from typing import Any

from runstream.contracts import Column, ColumnFormat, ColumnHint, Grain, ResultShape

MARKDOWN_ROWS = 50

_INTEGER = re.compile(r"^(U?(TINY|SMALL|BIG|HUGE)?INT(EGER)?\d*|INT\d+|LONG|SHORT)$")
_FLOAT = re.compile(r"^(FLOAT\d*|REAL|DOUBLE( PRECISION)?|NUMERIC|DECIMAL)(\((\d+),\s*(\d+)\))?$")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# The planner names its time dimensions after their grain; a column so named is read at
# that grain when its values agree (every `month` is a first of the month, and so on).
_GRAIN_NAMES: dict[str, Grain] = {"year": "year", "quarter": "quarter", "month": "month",
                                  "week": "week", "day": "day"}  # fmt: skip
_ID = re.compile(r"(^|_)(id|code|zip|zipcode|postcode|postal_code)$|^id_")
_YEAR = re.compile(r"(^|_)year$")


def column_formats(
    columns: list[Column], rows: list[list[Any]], shape: ResultShape | None = None
) -> list[ColumnFormat]:
    return [
        _format(col, [r[i] for r in rows if i < len(r) and r[i] is not None],
                shape.hint(col.name) if shape is not None else None, shaped=shape is not None)
        for i, col in enumerate(columns)
    ]  # fmt: skip


def _format(
    col: Column, values: list[Any], hint: ColumnHint | None, *, shaped: bool
) -> ColumnFormat:
    t = col.type.strip().upper()
    name = col.name.lower()
    if t in ("BOOLEAN", "BOOL"):
        return ColumnFormat(name=col.name, kind="boolean")
    # Without a shape, the rules planner's own names say "a percentage"; a table's own
    # column is never assumed to be one (it could hold fractions of 1).
    percent = (hint.percent if hint is not None else
               not shaped and (name == "percent" or name.startswith("percent_")))  # fmt: skip
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if _INTEGER.match(t):
        if percent:
            return ColumnFormat(name=col.name, kind="percent", decimals=1)
        grain = hint.grain if hint is not None else None
        if grain is None and _YEAR.search(name) and all(1000 <= v <= 9999 for v in numbers):
            grain = "year"
        if grain in ("year", "hour"):
            return ColumnFormat(name=col.name, kind="integer", grouping=False, grain=grain)
        return ColumnFormat(name=col.name, kind="integer", grouping=not _ID.search(name))
    float_type = _FLOAT.match(t)
    if float_type:
        if percent:
            return ColumnFormat(name=col.name, kind="percent", decimals=1)
        scale = float_type.group(5)
        return ColumnFormat(name=col.name, kind="decimal",
                            decimals=_decimals(numbers, int(scale) if scale else None),
                            grouping=not _ID.search(name))  # fmt: skip
    if t == "DATE":
        grain = hint.grain if hint is not None else None
        if grain is None or grain not in _GRAIN_NAMES.values():
            grain = _grain_of(name, values)
        return ColumnFormat(name=col.name, kind="date", grain=grain)
    if t.startswith(("TIMESTAMP", "DATETIME")):
        return ColumnFormat(name=col.name, kind="timestamp")
    return ColumnFormat(name=col.name, kind="text")


def _decimals(numbers: list[int | float], scale: int | None) -> int:
    if scale is not None and scale <= 2:
        return scale
    finite = [abs(v) for v in numbers if math.isfinite(v)]
    if all(float(v).is_integer() and v < 1e15 for v in finite):
        return 0
    largest = max(finite)
    if largest >= 1:
        return 2
    # Every value below 1: three significant digits of the largest (0.823, 0.0512).
    return min(6, 2 - math.floor(math.log10(largest)))


def _grain_of(name: str, values: list[Any]) -> Grain:
    """A DATE column named after a grain is read at it when every value agrees."""
    grain = _GRAIN_NAMES.get(name)
    days = [_date(v) for v in values]
    if grain is None or any(d is None for d in days):
        return "day"
    fits = {
        "year": lambda d: d.month == 1 and d.day == 1,
        "quarter": lambda d: d.month in (1, 4, 7, 10) and d.day == 1,
        "month": lambda d: d.day == 1,
        "week": lambda d: d.isoweekday() == 1,
        "day": lambda d: True,
    }[grain]
    return grain if all(fits(d) for d in days) else "day"


def _date(value: Any) -> date | None:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


def display_rows(formats: list[ColumnFormat], rows: list[list[Any]]) -> list[list[str | None]]:
    seconds = [f.kind == "timestamp" and _any_seconds([r[i] for r in rows if i < len(r)])
               for i, f in enumerate(formats)]  # fmt: skip
    return [
        [display(formats[i], v, seconds=seconds[i]) if i < len(formats) else _text(v)
         for i, v in enumerate(row)]
        for row in rows
    ]  # fmt: skip


def display(fmt: ColumnFormat, value: Any, *, seconds: bool = False) -> str | None:
    """One value in its column's display form; null stays null."""
    if value is None:
        return None
    try:
        match fmt.kind:
            case "integer" | "decimal" if _is_number(value):
                if fmt.grain == "hour" and float(value).is_integer():
                    return f"{int(value):02d}:00"
                return _number(float(value), fmt.decimals, fmt.grouping)
            case "percent" if _is_number(value):
                return _number(float(value), fmt.decimals, True) + "%"
            case "date":
                day = _date(value)
                return _date_text(day, fmt.grain or "day") if day is not None else _text(value)
            case "timestamp":
                return _timestamp_text(str(value), seconds)
            case "boolean" if isinstance(value, bool):
                return "Yes" if value else "No"
    except (ValueError, OverflowError):
        pass
    return _text(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _number(value: float, decimals: int, grouping: bool) -> str:
    text = f"{value:{',' if grouping else ''}.{decimals}f}"
    # -0.00 is zero: a rounded-away sign would claim a direction the number does not have.
    return text[1:] if text.startswith("-") and not any(c in "123456789" for c in text) else text


def _date_text(d: date, grain: Grain) -> str:
    month = _MONTHS[d.month - 1]
    match grain:
        case "year":
            return f"{d.year}"
        case "quarter":
            return f"Q{(d.month - 1) // 3 + 1} {d.year}"
        case "month":
            return f"{month} {d.year}"
        case "week":
            return f"Week of {month} {d.day}, {d.year}"
        case _:
            return f"{month} {d.day}, {d.year}"


def _parse_timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _any_seconds(values: list[Any]) -> bool:
    for v in values:
        try:
            t = _parse_timestamp(str(v))
        except ValueError:
            continue
        if t.second or t.microsecond:
            return True
    return False


def _timestamp_text(text: str, seconds: bool) -> str:
    t = _parse_timestamp(text)
    clock = f"{t.hour:02d}:{t.minute:02d}" + (f":{t.second:02d}" if seconds else "")
    zone = ""
    if t.utcoffset() is not None:
        offset = t.strftime("%z")
        zone = " UTC" if offset == "+0000" else f" UTC{offset[:3]}:{offset[3:]}"
    return f"{_date_text(t.date(), 'day')} {clock}{zone}"


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "Yes" if value else "No"
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) else str(value)
    return json.dumps(value, ensure_ascii=False)


def markdown(names: list[str], rows: list[list[Any]], total: int) -> str:
    """A Markdown table of at most MARKDOWN_ROWS rows (`|` escaped), noting what is left."""

    def cell(v: Any) -> str:
        if v is None:
            return ""
        if isinstance(v, float):
            v = round(v, 4)
            return str(int(v)) if v.is_integer() and abs(v) < 1e15 else str(v)
        text = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
        return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")

    lines = [
        "| " + " | ".join(cell(n) for n in names) + " |",
        "|" + "|".join(" --- " for _ in names) + "|",
    ]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows[:MARKDOWN_ROWS]]
    if total > min(len(rows), MARKDOWN_ROWS):
        lines.append(f"\n_{min(len(rows), MARKDOWN_ROWS)} of {total} rows shown._")
    return "\n".join(lines)
