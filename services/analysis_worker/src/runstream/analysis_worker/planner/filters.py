"""Filters: "where region is North", "salary over 100000", "in 2024", "since March 2024",
"in the West", "for Widget or Gizmo", "remote employees".

Literals are kept as typed (or as the stored value they name) and reach SQL only through
`quote_literal`; numbers and dates only when they match a strict pattern.
"""

from __future__ import annotations

import re
from typing import Literal

from runstream.analysis_worker.planner.dates import (
    MONTHS,
    bare_part,
    in_year,
    is_year,
    month_of_year,
    period_at,
    year,
)
from runstream.analysis_worker.planner.lexicon import ColumnRef, Tok, Unreadable
from runstream.analysis_worker.planner.reader import Reader
from runstream.analysis_worker.planner.spec import (
    Filter,
    Period,
    PeriodFilter,
    ValueFilter,
)
from runstream.analysis_worker.planner.words import (
    FILLER,
    KEYWORDS,
    NEGATIONS,
)

ValueOp = Literal["=", "<>", ">", ">=", "<", "<=", "in", "not in", "between"]

_OPS: dict[str, ValueOp] = {"=": "=", "!=": "<>", ">": ">", ">=": ">=", "<": "<", "<=": "<="}

_OP_WORDS: list[tuple[tuple[str, ...], ValueOp]] = [
    (("is", "not"), "<>"), (("not", "equal", "to"), "<>"), (("not",), "<>"),
    (("is", "equal", "to"), "="), (("equal", "to"), "="), (("equal",), "="),
    (("more", "than"), ">"), (("greater", "than"), ">"), (("higher", "than"), ">"),
    (("larger", "than"), ">"), (("bigger", "than"), ">"), (("over",), ">"), (("above",), ">"),
    (("exceeding",), ">"), (("exceed",), ">"), (("at", "least"), ">="),
    (("less", "than"), "<"), (("fewer", "than"), "<"), (("lower", "than"), "<"),
    (("smaller", "than"), "<"), (("under",), "<"), (("below",), "<"), (("at", "most"), "<="),
    (("between",), "between"), (("is",), "="), (("in",), "="),
]  # fmt: skip

_PERIOD_OPS: dict[str, Literal["in", "since", "after", "before", "until"]] = {
    "=": "in", ">=": "since", ">": "after", "<": "before", "<=": "until",
}

_DATE_PREPS: dict[str, Literal["in", "since", "after", "before", "until"]] = {
    "in": "in", "during": "in", "for": "in", "of": "in", "on": "in", "within": "in",
    "since": "since", "from": "since", "starting": "since", "after": "after",
    "before": "before", "until": "until", "through": "until", "till": "until",
    "between": "in",
}  # fmt: skip

_STOP = FILLER | KEYWORDS | {"by", "per", "and", "or", "for", "in", "where", "with", "from"}



class FilterReader(Reader):
    # --- explicit conditions: "where region is North", "salary over 100000" ------------
    def conditions(self) -> None:
        k = 0
        while k < len(live := self.live()):
            t = live[k]
            nxt = live[k + 1] if k + 1 < len(live) else None
            end: int | None = None
            if t.is_word("where", "with", "whose", "having", "when", "if") and nxt is not None:
                if nxt.kind == "col":
                    end = self._condition(live, k + 1, explicit=True)
                elif nxt.kind == "word" and nxt.norm in ("year", "month"):
                    end = self._date_part(live, k + 1)
                if end is not None:
                    self.use("filter", t)
            elif t.kind == "col":
                end = self._condition(live, k, explicit=False)
            elif t.kind == "word" and (op := _op_at(live, k)) is not None:
                end = self._number_first(live, k, *op)
            elif t.is_word("with") and nxt is not None and nxt.kind == "number":
                end = self._number_first(live, k, "=", 1)
            elif t.is_word("older", "younger") and self.words_at(live, k + 1, "than"):
                end = self._age(live, k)
            if end is None:
                k += 1
                continue
            k = 0  # the live view changed; scan it again from the start

    def _condition(self, live: list[Tok], j: int, *, explicit: bool) -> int | None:
        """`<col> [op] <value>` at live[j]: add the filter and mark its words used."""
        col = live[j].col
        assert col is not None
        k, op = j + 1, None
        if self.words_at(live, k, "is") and _op_at(live, k + 1) is not None:
            k += 1  # "where inflation is over 25"
        if k < len(live) and live[k].kind == "op":
            op, k = _OPS[live[k].norm], k + 1
        else:
            for words, word_op in _OP_WORDS:
                if self.words_at(live, k, *words):
                    op, k = word_op, k + len(words)
                    break
        if op is None and not explicit:
            return None
        if not explicit and op == "between" and self._years_between(live, k):
            return None  # "average literacy rate between 2020 and 2022": a period
        op = op or "="
        if not explicit and op in ("=", "<>") and col.kind in ("number", "text", "bool"):
            # "region is North" without 'where' is a filter only with a value the table holds.
            if k >= len(live) or (live[k].kind not in ("value", "quoted") and not (
                col.kind == "bool" and live[k].is_word("true", "false", "yes", "no")
            )):
                return None
        taken: list[Tok] = live[j:k]
        made = self._value_for(col, op, live, k, taken)
        if made is None:
            if explicit and col.kind == "number" and k < len(live) and live[k].kind != "number":
                raise Unreadable(f"{col.name} is a number, but '{live[k].raw}' is not")
            return None
        self.filters.append(made)
        self.use("filter", *taken)
        return k

    def _years_between(self, live: list[Tok], k: int) -> bool:
        dated = bool(self.schema.date_cols) or self.schema.year_col is not None
        return dated and is_year(live[k] if k < len(live) else None) and is_year(
            live[k + 2] if k + 2 < len(live) else None
        )

    def _value_for(
        self, col: ColumnRef, op: ValueOp, live: list[Tok], k: int, taken: list[Tok]
    ) -> Filter | None:
        pos = taken[0].pos
        if col.kind == "date":
            found = period_at(live, k, bare_month=True)
            if found is None or op in ("<>", "between"):
                return None
            period, span = found
            taken += live[k : k + span]
            return PeriodFilter(period, _PERIOD_OPS.get(op, "in"), col=col, pos=pos)
        if col.kind == "bool":
            value = True
            if k < len(live) and live[k].is_word("true", "false", "yes", "no"):
                value = live[k].norm in ("true", "yes")
                taken.append(live[k])
            if op not in ("=", "<>"):
                return None
            return ValueFilter(col, "=", (value if op == "=" else not value,), pos)
        if col.kind == "number":
            if op == "between":
                if not (self.words_at(live, k + 1, "and") and _num(live, k) and _num(live, k + 2)):
                    return None
                taken += live[k : k + 3]
                return ValueFilter(
                    col, "between", (float(live[k].norm), float(live[k + 2].norm)), pos
                )
            if not _num(live, k):
                return None
            taken.append(live[k])
            if col.words == ("year",) and op in _PERIOD_OPS and is_year(live[k]):
                return PeriodFilter(year(int(live[k].norm)), _PERIOD_OPS[op], col=col, pos=pos)
            return ValueFilter(col, op, (float(live[k].norm),), pos)
        if col.kind != "text" or op not in ("=", "<>"):
            return None
        values = self._text_values(col, live, k, taken)
        if not values:
            return None
        if len(values) > 1:
            return ValueFilter(col, "in" if op == "=" else "not in", tuple(values), pos)
        return ValueFilter(col, op, (values[0],), pos)

    def _text_values(
        self, col: ColumnRef, live: list[Tok], k: int, taken: list[Tok]
    ) -> list[str]:
        """Values of a text column: known values or quoted text, joined by 'or'; else words."""
        values: list[str] = []
        while k < len(live) and live[k].kind in ("value", "quoted"):
            t = live[k]
            if t.kind == "value" and t.col not in (col, None):
                break
            values.append(t.value if t.kind == "value" and t.value else t.norm)
            taken.append(t)
            k += 1
            if k + 1 < len(live) and live[k].is_word("or", "and") and live[k + 1].kind in (
                "value", "quoted"
            ):
                taken.append(live[k])
                k += 1
        if values:
            return values
        words: list[Tok] = []
        while k < len(live) and live[k].kind == "word" and live[k].norm not in _STOP:
            words.append(live[k])
            k += 1
            if len(words) == 4:
                break
        taken += words
        return [" ".join(t.raw for t in words)] if words else []

    def _date_part(self, live: list[Tok], k: int) -> int | None:
        """'where year is 2024', 'where month is March': a part of the date column."""
        part = live[k]
        j = k + 1
        if self.words_at(live, j, "is") or self.words_at(live, j, "="):
            j += 1
        elif j < len(live) and live[j].kind == "op" and live[j].norm == "=":
            j += 1
        if j >= len(live):
            return None
        v = live[j]
        if part.norm == "year" and is_year(v):
            period = year(int(v.norm))
        elif part.norm == "month" and v.kind == "word" and v.norm in MONTHS:
            period = month_of_year(MONTHS[v.norm])
        else:
            return None
        self.filters.append(PeriodFilter(period, "in", pos=part.pos))
        self.use("filter", *live[k : j + 1])
        return j + 1

    def _number_first(self, live: list[Tok], k: int, op: ValueOp, width: int) -> int | None:
        """'more than 5 units', 'with 3 bedrooms': the number comes before its column."""
        n = k + width
        if not (_num(live, n) and n + 1 < len(live)):
            return None
        col = live[n + 1].col
        if live[n + 1].kind != "col" or col is None or col.kind != "number":
            return None
        self.filters.append(ValueFilter(col, op, (float(live[n].norm),), live[k].pos))
        self.use("filter", *live[k : n + 2])
        return n + 2

    def _age(self, live: list[Tok], k: int) -> int | None:
        """'older than 50', 'younger than 30': a condition on the age column, if any."""
        age = next((c for c in self.schema.cols if c.words == ("age",) and c.is_measure), None)
        if age is None or not _num(live, k + 2):
            return None
        op: ValueOp = ">" if live[k].norm == "older" else "<"
        self.filters.append(ValueFilter(age, op, (float(live[k + 2].norm),), live[k].pos))
        self.use("filter", *live[k : k + 3])
        return k + 3

    # --- dates named on their own: "in 2024", "since March 2024", "Q1 2023" ------------
    def periods(self) -> None:
        k = 0
        while k < len(live := self.live()):
            back = k - 1 - (1 if k > 1 and live[k - 1].is_word("the") else 0)
            prep = live[back] if back >= 0 and live[back].kind == "word" else None
            op = _DATE_PREPS.get(prep.norm) if prep is not None else None
            found = self._shared_year(live, k) or period_at(live, k, bare_month=op is not None)
            if found is None:
                k += 1
                continue
            period, span = found
            taken = live[k : k + span]
            if prep is not None and op is not None:
                taken = [*live[back:k], *taken]
            start = taken[0]
            after = k + span
            joined = prep is not None and (
                (prep.norm == "between" and self.words_at(live, after, "and"))
                or (prep.norm == "from" and any(
                    self.words_at(live, after, w) for w in ("to", "until", "through")))
            )  # fmt: skip
            last = period_at(live, after + 1, bare_month=True) if joined else None
            if last is not None:
                taken += live[after : after + 1 + last[1]]
                self.filters.append(PeriodFilter(period, "between", to=last[0], pos=start.pos))
                self.use("filter", *taken)
                continue
            if prep is not None and prep.norm == "between":
                raise Unreadable(f"'between {period.label}' needs an end: 'between X and Y'")
            also: list[Period] = []
            while ((op or "in") == "in" and self.words_at(live, after, "and")) or self.words_at(
                live, after, "or"
            ):
                more = period_at(live, after + 1, bare_month=True)
                if more is None or more[0].grain != period.grain:
                    break
                also.append(more[0])  # "in 2023 and 2024": either year
                taken += live[after : after + 1 + more[1]]
                after += 1 + more[1]
            self.filters.append(
                PeriodFilter(period, op or "in", pos=start.pos, also=tuple(also))
            )
            self.use("filter", *taken)

    def _shared_year(self, live: list[Tok], k: int) -> tuple[Period, int] | None:
        """'March or April 2024', 'Q1 and Q2 2024': the first period takes the year of the
        next one."""
        part = bare_part(live[k])
        if part is None or not (self.words_at(live, k + 1, "or") or self.words_at(
            live, k + 1, "and"
        )):  # fmt: skip
            return None
        nxt = period_at(live, k + 2)
        if nxt is None or nxt[0].grain != part[0]:
            return None
        return in_year(part[0], part[1], nxt[0].start.year), 1

    # --- values named on their own: "in the West", "for Widget or Gizmo" ---------------
    def values(self) -> None:
        k = 0
        while k < len(live := self.live()):
            t = live[k]
            if t.kind not in ("value", "quoted"):
                k += 1
                continue
            self._value_filter(live, k)

    def _value_filter(self, live: list[Tok], k: int) -> None:
        t = live[k]
        before = live[k - 1] if k > 0 else None
        after = live[k + 1] if k + 1 < len(live) else None
        col = t.col
        if t.kind == "quoted":
            col = self._quoted_column(t, before)
        elif col is None:
            named = [x.col for x in (before, after) if x is not None and x.kind == "col"]
            owners = [c for c, _ in self.schema.holders(t.norm)]
            col = next((c for c in named if c in owners), None)
            if col is None:
                names = " and ".join(sorted({c.name for c in owners}))
                raise Unreadable(
                    f"'{t.raw}' is a value of {names}; say which, e.g. '{owners[0].name} {t.raw}'"
                )
        taken = [t]
        values = [t.value if t.value else t.norm]
        j = k + 1
        while j < len(live):
            nxt = live[j]
            if nxt.is_word("or", "and") and j + 1 < len(live):
                nxt, step = live[j + 1], 2
            else:
                step = 1
            if nxt.kind != "value" or nxt.col != col:
                break
            taken += live[j : j + step]
            values.append(nxt.value or nxt.norm)
            j += step
        if j < len(live) and live[j].kind == "col" and live[j].col == col:
            taken.append(live[j])  # "the West region"
        i = k - 1
        if before is not None and before.kind == "col" and before.col == col:
            taken.append(before)  # "region West"
            i -= 1
        negate = False
        while i >= 0 and live[i].kind == "word" and live[i].norm in ("the", "in", "from", "for",
                                                                     "at", "on", "of", "by"):
            i -= 1
        if i >= 0 and live[i].kind == "word" and live[i].norm in NEGATIONS:
            negate = True
            taken.append(live[i])
        elif i >= 1 and self.words_at(live, i - 1, "other", "than"):
            negate = True
            taken += live[i - 1 : i + 1]
        assert col is not None
        op: ValueOp
        if len(values) > 1:
            op = "not in" if negate else "in"
        else:
            op = "<>" if negate else "="
        self.filters.append(ValueFilter(col, op, tuple(values), min(x.pos for x in taken)))
        self.use("filter", *taken)

    def _quoted_column(self, t: Tok, before: Tok | None) -> ColumnRef:
        if before is not None and before.kind == "col" and before.col is not None:
            return before.col
        texts = [c for c in self.schema.cols if c.kind == "text" and not c.is_id]
        if len(texts) == 1:
            return texts[0]
        raise Unreadable(f"I could not tell which column holds '{t.raw}'")

    # --- booleans: "remote employees", "not remote" ------------------------------------
    def booleans(self) -> None:
        live = self.live()
        for k, t in enumerate(live):
            if t.kind != "col" or t.col is None or t.col.kind != "bool":
                continue
            taken = [t]
            value = True
            if k > 0 and live[k - 1].kind == "word" and live[k - 1].norm in NEGATIONS:
                value = False
                taken.append(live[k - 1])
            self.filters.append(ValueFilter(t.col, "=", (value,), min(x.pos for x in taken)))
            self.use("filter", *taken)


def _num(live: list[Tok], k: int) -> bool:
    return 0 <= k < len(live) and live[k].kind == "number" and bool(
        re.fullmatch(r"-?\d+(\.\d+)?", live[k].norm)
    )


def _op_at(live: list[Tok], k: int) -> tuple[ValueOp, int] | None:
    """A comparison written before a number: 'more than', 'over', 'at least', '>'."""
    for words, op in _OP_WORDS:
        if op in ("=", "<>", "between"):
            continue
        if all(k + n < len(live) and live[k + n].is_word(w) for n, w in enumerate(words)):
            return op, len(words)
    return None

