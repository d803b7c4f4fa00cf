"""The shape of a question the rules planner understood, and the DuckDB SQL it becomes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from runstream.analysis_worker.planner.lexicon import ColumnRef, quote_ident, quote_literal

Agg = Literal["sum", "avg", "min", "max", "median", "count", "count_distinct"]
Grain = Literal["day", "week", "month", "quarter", "year"]

_AGG_SQL = {"sum": "sum", "avg": "avg", "min": "min", "max": "max", "median": "median"}
_AGG_ALIAS = {
    "sum": "total",
    "avg": "average",
    "min": "min",
    "max": "max",
    "median": "median",
}
_AGG_WORDS = {
    "sum": "total",
    "avg": "average",
    "min": "minimum",
    "max": "maximum",
    "median": "median",
}


@dataclass(frozen=True)
class Measure:
    agg: Agg
    col: ColumnRef | None = None  # None only for count(*)

    @property
    def sql(self) -> str:
        if self.agg == "count":
            return "count(*)"
        assert self.col is not None
        if self.agg == "count_distinct":
            return f"count(DISTINCT {quote_ident(self.col.name)})"
        return f"{_AGG_SQL[self.agg]}({quote_ident(self.col.name)})"

    @property
    def alias(self) -> str:
        if self.agg == "count":
            return "count"
        assert self.col is not None
        if self.agg == "count_distinct":
            return f"distinct_{self.col.name}"
        return f"{_AGG_ALIAS[self.agg]}_{self.col.name}"

    def describe(self) -> str:
        if self.agg == "count":
            return "the number of rows"
        assert self.col is not None
        if self.agg == "count_distinct":
            return f"the number of distinct {self.col.name} values"
        return f"the {_AGG_WORDS[self.agg]} {self.col.name}"


@dataclass(frozen=True)
class Filter:
    sql: str
    text: str


def text_equals(col: ColumnRef, value: str, *, negate: bool = False) -> Filter:
    """Text matches ignore case: users type 'north' for 'North'."""
    op = "<>" if negate else "="
    word = "is not" if negate else "is"
    return Filter(
        f"lower(CAST({quote_ident(col.name)} AS VARCHAR)) {op} {quote_literal(value.lower())}",
        f"{col.name} {word} {quote_literal(value)}",
    )


@dataclass
class Intent:
    measures: list[Measure] = field(default_factory=list)
    groups: list[ColumnRef] = field(default_factory=list)
    grain: Grain | None = None
    date_col: ColumnRef | None = None
    filters: list[Filter] = field(default_factory=list)
    rank_desc: bool = True
    limit: int | None = None
    ranked: bool = False
    rows: bool = False  # SELECT * (a listing, or a ranking of individual rows)

    def add_measure(self, m: Measure) -> None:
        if m not in self.measures:
            self.measures.append(m)

    @property
    def chart_hint(self) -> str | None:
        if self.grain is not None:
            return "line"
        if self.groups and not self.rows:
            return "bar"
        return None


def render_sql(intent: Intent, table: str) -> str:
    t = quote_ident(table)
    where = [f.sql for f in intent.filters]
    if intent.grain is not None:
        assert intent.date_col is not None
        where.append(f"{quote_ident(intent.date_col.name)} IS NOT NULL")
    where_sql = f"\nWHERE {' AND '.join(where)}" if where else ""
    limit_sql = f"\nLIMIT {intent.limit}" if intent.limit is not None else ""
    direction = "DESC" if intent.rank_desc else "ASC"

    if intent.rows:
        order_sql = ""
        if intent.measures:
            m = intent.measures[0]
            assert m.col is not None
            order_sql = f"\nORDER BY {quote_ident(m.col.name)} {direction} NULLS LAST"
        return f"SELECT *\nFROM {t}{where_sql}{order_sql}{limit_sql}"

    keys: list[tuple[str, str]] = []  # (expression, alias)
    if intent.grain is not None:
        assert intent.date_col is not None
        period = (
            f"CAST(date_trunc({quote_literal(intent.grain)}, "
            f"{quote_ident(intent.date_col.name)}) AS DATE)"
        )
        keys.append((period, intent.grain))
    keys.extend((quote_ident(g.name), g.name) for g in intent.groups)
    select = [e if e == quote_ident(a) else f"{e} AS {quote_ident(a)}" for e, a in keys]
    select += [f"{m.sql} AS {quote_ident(m.alias)}" for m in intent.measures]
    sql = f"SELECT {', '.join(select)}\nFROM {t}{where_sql}"
    if not keys:
        return sql
    sql += f"\nGROUP BY {', '.join(e for e, _ in keys)}"
    key_order = [f"{quote_ident(a)} ASC" for _, a in keys]
    first = quote_ident(intent.measures[0].alias)
    if intent.grain is not None and not intent.ranked:
        order = key_order
    else:
        order = [f"{first} {direction if intent.ranked else 'DESC'} NULLS LAST", *key_order]
    return f"{sql}\nORDER BY {', '.join(order)}{limit_sql}"


def explain(intent: Intent) -> str:
    what = " and ".join(m.describe() for m in intent.measures)
    if intent.rows:
        text = "The rows of the table"
        if intent.measures and intent.limit is not None:
            which = "highest" if intent.rank_desc else "lowest"
            text = f"The {intent.limit} rows with the {which} {intent.measures[0].col.name}"  # type: ignore[union-attr]
        elif intent.limit is not None:
            text = f"The first {intent.limit} rows of the table"
    else:
        text = what[0].upper() + what[1:]
        if intent.grain is not None:
            text += f" per {intent.grain} of {intent.date_col.name}"  # type: ignore[union-attr]
        if intent.groups:
            text += " for each " + " and ".join(g.name for g in intent.groups)
    if intent.filters:
        text += ", where " + " and ".join(f.text for f in intent.filters)
    if intent.ranked and not intent.rows:
        end = "top" if intent.rank_desc else "bottom"
        text += f"; the {end} {intent.limit}" if intent.limit != 1 else f"; the {end} one"
    elif intent.grain is not None:
        text += ", oldest period first"
    elif intent.groups:
        text += ", largest first"
    return text + "."


def example_questions(cols: list[ColumnRef], sample_rows: list[list[Any]]) -> list[str]:
    """Three to five questions this schema can answer, built from its own column names."""
    num = next((c for c in cols if c.kind == "number"), None)
    text_i = next((i for i, c in enumerate(cols) if c.kind == "text"), None)
    date = next((c for c in cols if c.kind == "date"), None)
    out = ["how many rows are there"]
    cat = cols[text_i] if text_i is not None else None
    if num is not None:
        out.append(f"total {num.label}")
        if cat is not None:
            out.append(f"average {num.label} by {cat.label}")
            out.append(f"top 5 {cat.label} by {num.label}")
        if date is not None:
            out.append(f"{num.label} by month")
    elif cat is not None:
        out.append(f"count of rows by {cat.label}")
    if cat is not None and text_i is not None and len(out) < 5:
        value = next(
            (r[text_i] for r in sample_rows if len(r) == len(cols) and isinstance(r[text_i], str)),
            None,
        )
        if value:
            out.append(f"how many rows where {cat.label} is {value}")
    return out[:5]
