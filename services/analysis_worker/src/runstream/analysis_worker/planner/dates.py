"""Calendar periods as users write them: 2024, Q1 2023, H1 2024, March 2024, 2024-03,
2024-03-05, and recurring ones: in March (any year), on Mondays, on weekends, at 8am."""

from __future__ import annotations

import re
from datetime import date

from runstream.analysis_worker.planner.lexicon import Tok
from runstream.analysis_worker.planner.spec import Period, PeriodGrain

MONTHS = {
    name: i + 1
    for i, names in enumerate(
        [("january", "jan"), ("february", "feb"), ("march", "mar"), ("april", "apr"),
         ("may",), ("june", "jun"), ("july", "jul"), ("august", "aug"),
         ("september", "sep", "sept"), ("october", "oct"), ("november", "nov"),
         ("december", "dec")]
    )
    for name in names
}  # fmt: skip
MONTH_NAMES = [
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
]  # fmt: skip
WEEKDAYS = {name: i + 1 for i, name in enumerate(
    ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"))}
ORDINAL_QUARTERS = {"first": 1, "1st": 1, "second": 2, "2nd": 2, "third": 3, "3rd": 3,
                    "fourth": 4, "4th": 4, "last": 4}  # fmt: skip
_YEAR = re.compile(r"^(19|20)\d\d$")
_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
_DAY = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$")
_QUARTER = re.compile(r"^q([1-4])$")
_HALF = re.compile(r"^h([12])$")
_HOUR = re.compile(r"^(\d{1,2})(am|pm)$")


def is_year(tok: Tok | None) -> bool:
    return tok is not None and tok.kind == "number" and bool(_YEAR.match(tok.norm))


def year(y: int) -> Period:
    return Period("year", date(y, 1, 1), date(y + 1, 1, 1), str(y))


def quarter(y: int, q: int) -> Period:
    end = date(y + 1, 1, 1) if q == 4 else date(y, 3 * q + 1, 1)
    return Period("quarter", date(y, 3 * q - 2, 1), end, f"Q{q} {y}")


def half(y: int, h: int) -> Period:
    end = date(y + 1, 1, 1) if h == 2 else date(y, 7, 1)
    return Period("half", date(y, 6 * h - 5, 1), end, f"H{h} {y}")


def month(y: int, m: int) -> Period:
    end = date(y + 1, 1, 1) if m == 12 else date(y, m + 1, 1)
    return Period("month", date(y, m, 1), end, f"{MONTH_NAMES[m - 1]} {y}")


def recurring(grain: PeriodGrain, parts: tuple[int, ...], label: str) -> Period:
    # start/end mean nothing for a period that recurs; its parts say it all.
    return Period(grain, date(2000, 1, 1), date(2000, 1, 1), label, parts)


def month_of_year(m: int) -> Period:
    return recurring("month_of_year", (m,), MONTH_NAMES[m - 1])


def hour_of_day(h: int) -> Period:
    shown = f"{h % 12 or 12} {'AM' if h < 12 else 'PM'}"
    return recurring("hour_of_day", (h,), f"the {shown} hour")


def _hour(t: Tok, nxt: Tok | None) -> tuple[int, int] | None:
    """'8am', '8 pm' -> (hour 0-23, tokens spanned)."""
    if m := _HOUR.match(t.norm):
        h, pm, span = int(m.group(1)), m.group(2) == "pm", 1
    elif t.kind == "number" and t.norm.isdigit() and nxt is not None and nxt.is_word("am", "pm"):
        h, pm, span = int(t.norm), nxt.norm == "pm", 2
    else:
        return None
    if not 1 <= h <= 12:
        return None
    return (h % 12) + (12 if pm else 0), span


def period_at(toks: list[Tok], k: int, *, bare_month: bool = False) -> tuple[Period, int] | None:
    """The period written at toks[k], and how many tokens it spans; None if there is none.

    A month name alone ("in March") is a month of any year only when `bare_month`: the
    caller has seen a preposition that makes it a date ("may" alone is never a month).
    """
    if k >= len(toks):
        return None
    t = toks[k]
    nxt = toks[k + 1] if k + 1 < len(toks) else None
    after = toks[k + 2] if k + 2 < len(toks) else None
    if (hour := _hour(t, nxt)) is not None:
        return hour_of_day(hour[0]), hour[1]
    if t.kind == "number":
        if _YEAR.match(t.norm):
            y = int(t.norm)
            if nxt is not None and nxt.kind == "word" and (m := _QUARTER.match(nxt.norm)):
                return quarter(y, int(m.group(1))), 2
            return year(y), 1
        if m := _MONTH.match(t.norm):
            return month(int(m.group(1)), int(m.group(2))), 1
        if m := _DAY.match(t.norm):
            day = date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
            return Period("day", day, date.fromordinal(day.toordinal() + 1), t.norm), 1
        return None
    if t.kind != "word":
        return None
    for pattern, make in ((_QUARTER, quarter), (_HALF, half)):
        if (m := pattern.match(t.norm)) and nxt is not None:
            if is_year(nxt):
                return make(int(nxt.norm), int(m.group(1))), 2
            if nxt.is_word("of") and is_year(after):
                assert after is not None
                return make(int(after.norm), int(m.group(1))), 3
            return None
    if t.norm in ("first", "second") and nxt is not None and nxt.is_word("half"):
        n = 4 if k + 3 < len(toks) and toks[k + 2].is_word("of") else 3
        if is_year(toks[k + n - 1] if k + n - 1 < len(toks) else None):
            return half(int(toks[k + n - 1].norm), 1 if t.norm == "first" else 2), n
    if t.norm in ORDINAL_QUARTERS and nxt is not None and nxt.is_word("quarter"):
        rest = toks[k + 2 : k + 4]
        if rest and rest[0].is_word("of"):
            rest = rest[1:]
        if rest and is_year(rest[0]):
            span = 4 if toks[k + 2].is_word("of") else 3
            return quarter(int(rest[0].norm), ORDINAL_QUARTERS[t.norm]), span
        return None
    if t.norm in MONTHS:
        m_no = MONTHS[t.norm]
        if is_year(nxt):
            assert nxt is not None
            return month(int(nxt.norm), m_no), 2
        if nxt is not None and nxt.is_word("of") and is_year(after):
            assert after is not None
            return month(int(after.norm), m_no), 3
        if bare_month and t.norm != "may" and len(t.norm) > 3:
            return month_of_year(m_no), 1
    if bare_month and t.norm in WEEKDAYS:
        return recurring("isodow", (WEEKDAYS[t.norm],), t.norm.capitalize() + "s"), 1
    if bare_month and t.norm in ("weekend", "weekday"):
        parts = (6, 7) if t.norm == "weekend" else (1, 2, 3, 4, 5)
        return recurring("isodow", parts, t.norm + "s"), 1
    return None


def bare_part(t: Tok) -> tuple[str, int] | None:
    """A quarter, half or month named without its year ('Q1', 'H2', 'March')."""
    if m := _QUARTER.match(t.norm):
        return "quarter", int(m.group(1))
    if m := _HALF.match(t.norm):
        return "half", int(m.group(1))
    if t.kind == "word" and t.norm in MONTHS and t.norm != "may":
        return "month", MONTHS[t.norm]
    return None


def in_year(kind: str, n: int, y: int) -> Period:
    return {"quarter": quarter, "half": half, "month": month}[kind](y, n)
