"""The filter pass of the rules planner: `where region is North`, `in 2024`, `for Widget`.

Literals are kept as typed and always reach SQL through `quote_literal`; numbers and
dates only when they match a strict pattern.
"""

from __future__ import annotations

import re
from typing import Any

from runstream.analysis_worker.planner.lexicon import (
    GROUP_WORDS,
    ColumnRef,
    Tok,
    Unreadable,
    mark_columns,
    quote_ident,
    tokenize,
)
from runstream.analysis_worker.planner.query import Filter, Intent, text_equals

# Words the planner reads itself, so never taken as the tail of a column name.
RESERVED = frozenset(
    {"day", "week", "month", "quarter", "year", "date", "time", "row", "count", "number", "total"}
)
STOP = GROUP_WORDS | {"and", "or", "for", "in", "where", "with", "from", "on", "during", "top"}
_YEAR = re.compile(r"^(19|20)\d\d$")
_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
_DAY = re.compile(r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$")
_OPS = {"=": "=", "!=": "<>", ">": ">", ">=": ">=", "<": "<", "<=": "<="}
_OP_WORDS: list[tuple[tuple[str, ...], str]] = [
    (("is", "not"), "<>"), (("not",), "<>"), (("is", "equal", "to"), "="), (("equal", "to"), "="),
    (("equal",), "="), (("is",), "="), (("more", "than"), ">"), (("greater", "than"), ">"),
    (("higher", "than"), ">"), (("over",), ">"), (("above",), ">"), (("exceed",), ">"),
    (("at", "least"), ">="), (("less", "than"), "<"), (("fewer", "than"), "<"),
    (("lower", "than"), "<"), (("under",), "<"), (("below",), "<"), (("at", "most"), "<="),
]  # fmt: skip


class FilterReader:
    """Holds the question being read; each pass takes the tokens it understands."""

    toks: list[Tok]
    cols: list[ColumnRef]
    intent: Intent

    def __init__(self, question: str, cols: list[ColumnRef], samples: list[list[Any]]) -> None:
        self.cols = cols
        self.toks = mark_columns(tokenize(question), cols, RESERVED)
        self.samples = samples
        self.intent = Intent()

    # --- filters -----------------------------------------------------------------------
    def _filters(self) -> None:
        out: list[Tok] = []
        toks, i = self.toks, 0
        while i < len(toks):
            t = toks[i]
            end = None
            if t.is_word("where", "with", "whose", "having", "when") and col_at(toks, i + 1):
                end = self._comparison(i + 1)
            elif t.is_word("for", "in", "from", "on", "at", "during") and i + 1 < len(toks):
                nxt = toks[i + 1]
                if nxt.kind == "col" and nxt.col and nxt.col.kind == "text":
                    end = self._comparison(i + 1)
                elif nxt.kind == "number" and _is_date_literal(nxt.norm):
                    self._date_filter(nxt.norm, "=")
                    end = i + 2
                else:
                    end = self._sample_value(i + 1)
            if end is None:
                out.append(t)
                i += 1
                continue
            while end + 1 < len(toks) and toks[end].is_word("and") and col_at(toks, end + 1):
                nxt_end = self._comparison(end + 1)
                if nxt_end is None:
                    break
                end = nxt_end
            i = end
        self.toks = out

    def _comparison(self, j: int) -> int | None:
        """`<col> [op] <value>` at j: add the filter, return the index after it."""
        toks, col = self.toks, self.toks[j].col
        assert col is not None
        k, op = j + 1, "="
        if k < len(toks) and toks[k].kind == "op":
            op, k = _OPS[toks[k].norm], k + 1
        else:
            for words, word_op in _OP_WORDS:
                if all(k + n < len(toks) and toks[k + n].is_word(w) for n, w in enumerate(words)):
                    op, k = word_op, k + len(words)
                    break
        value = _value(toks, k)
        if value is None:
            return None
        text, k = value
        qcol = quote_ident(col.name)
        if col.kind == "text":
            if op not in ("=", "<>"):
                return None
            self.intent.filters.append(text_equals(col, text, negate=op == "<>"))
        elif col.kind == "number":
            if not re.fullmatch(r"-?\d+(\.\d+)?", text):
                raise Unreadable(f"{col.name} is a number, but {text!r} is not")
            self.intent.filters.append(Filter(f"{qcol} {op} {text}", f"{col.name} {op} {text}"))
        elif col.kind == "date":
            self._date_filter(text, op, col)
        elif col.kind == "bool" and text.lower() in ("true", "false", "yes", "no"):
            value_sql = "true" if text.lower() in ("true", "yes") else "false"
            self.intent.filters.append(
                Filter(f"{qcol} {op} {value_sql}", f"{col.name} is {value_sql}")
            )
        else:
            return None
        return k

    def _date_filter(self, text: str, op: str, col: ColumnRef | None = None) -> None:
        col = col or self._date_column()
        if col is None:
            year_col = next((c for c in self.cols if c.words == ("year",)), None)
            if year_col is not None and _YEAR.match(text):
                q = quote_ident(year_col.name)
                self.intent.filters.append(Filter(f"{q} {op} {text}", f"{year_col.name} is {text}"))
                return
            raise Unreadable(f"there is no date column to compare with {text}")
        q = quote_ident(col.name)
        if _YEAR.match(text):
            sql, shown = f"year({q}) {op} {text}", f"the year of {col.name} is {text}"
        elif _MONTH.match(text):
            sql = f"date_trunc('month', {q}) {op} DATE '{text}-01'"
            shown = f"the month of {col.name} is {text}"
        elif _DAY.match(text):
            sql, shown = f"CAST({q} AS DATE) {op} DATE '{text}'", f"{col.name} is {text}"
        else:
            raise Unreadable(f"{text!r} is not a year, a month (2024-03) or a day (2024-03-05)")
        if op != "=":
            shown = f"{col.name} {op} {text}"
        self.intent.filters.append(Filter(sql, shown))

    def _sample_value(self, k: int) -> int | None:
        """`for Widget`: a value seen in the sample rows of exactly one text column."""
        for n in range(min(4, len(self.toks) - k), 0, -1):
            span = self.toks[k : k + n]
            if any(t.kind not in ("word", "quoted") for t in span):
                continue
            text = " ".join(t.raw for t in span)
            owners = self._columns_holding(text)
            if len(owners) == 1:
                self.intent.filters.append(text_equals(owners[0], text))
                return k + n
            if n == 1 and span[0].kind == "quoted":
                texts = [c for c in self.cols if c.kind == "text"]
                if len(owners) == 0 and len(texts) == 1:
                    self.intent.filters.append(text_equals(texts[0], text))
                    return k + 1
                raise Unreadable(f"I could not tell which column holds {text!r}")
        return None

    def _columns_holding(self, text: str) -> list[ColumnRef]:
        want = text.lower()
        owners = []
        for i, c in enumerate(self.cols):
            if c.kind != "text":
                continue
            values = (r[i] for r in self.samples if i < len(r) and isinstance(r[i], str))
            if any(v.lower() == want for v in values):
                owners.append(c)
        return owners

    def _date_column(self) -> ColumnRef | None:
        mentioned = [t.col for t in self.toks if t.col is not None and t.col.kind == "date"]
        if mentioned:
            return mentioned[0]
        return next((c for c in self.cols if c.kind == "date"), None)


def _is_date_literal(text: str) -> bool:
    return bool(_YEAR.match(text) or _MONTH.match(text) or _DAY.match(text))


def col_at(toks: list[Tok], i: int) -> bool:
    return 0 <= i < len(toks) and toks[i].kind == "col"


def _value(toks: list[Tok], k: int) -> tuple[str, int] | None:
    """A literal at k: a quoted string, a number, or words up to the next keyword."""
    if k >= len(toks):
        return None
    t = toks[k]
    if t.kind in ("quoted", "number"):
        return t.norm, k + 1
    words: list[str] = []
    while k < len(toks) and toks[k].kind == "word" and toks[k].norm not in STOP and len(words) < 4:
        words.append(toks[k].raw)
        k += 1
    return (" ".join(words), k) if words else None
