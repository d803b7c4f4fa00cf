"""The structured plan the rules planner reads a question into, before any SQL exists.

A `QuerySpec` says what is computed — measures, dimensions, filters, a share, a ratio, a
comparison of two periods, an order and a limit — over one table. `render.py` turns it
into SQL and `interpret.py` into the one sentence a reader sees, so the two cannot
disagree about what was computed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Literal

from runstream.analysis_worker.planner.lexicon import ColumnRef

Agg = Literal[
    "count", "count_distinct", "sum", "avg", "median", "min", "max", "quantile", "stddev", "corr"
]
Grain = Literal["day", "week", "month", "quarter", "year", "weekday", "hour", "month_of_year"]
PeriodGrain = Literal[
    "year", "half", "quarter", "month", "day", "month_of_year", "isodow", "hour_of_day"
]
# Periods that recur (every March, every Monday, every 8 AM) rather than happen once.
RECURRING: tuple[PeriodGrain, ...] = ("month_of_year", "isodow", "hour_of_day")


@dataclass(frozen=True)
class Measure:
    agg: Agg
    col: ColumnRef | None = None  # None only for count(*)
    other: ColumnRef | None = None  # corr's second column
    q: float | None = None  # quantile: 0.9 for the 90th percentile
    noun: str = "rows"  # count(*): the user's word for the rows ("orders", "hires")


@dataclass(frozen=True)
class Dimension:
    col: ColumnRef
    grain: Grain | None = None  # a time grain over a date column (or a year column's values)


@dataclass(frozen=True)
class Period:
    """A calendar period named in the question: [start, end) and how it was written."""

    grain: PeriodGrain
    start: date
    end: date
    label: str
    parts: tuple[int, ...] = ()  # recurring: months 1-12, ISO weekdays 1-7, or hours 0-23


@dataclass(frozen=True)
class ValueFilter:
    col: ColumnRef
    op: Literal["=", "<>", ">", ">=", "<", "<=", "in", "not in", "between"]
    values: tuple[str | float | bool, ...]
    pos: int = 0  # where it starts in the question (splits a ratio's scope from its condition)


@dataclass(frozen=True)
class PeriodFilter:
    """A date range. `col` None means "the question's date column", chosen at the end."""

    period: Period
    op: Literal["in", "since", "after", "before", "until", "between"]
    col: ColumnRef | None = None
    to: Period | None = None  # between: the last period, inclusive
    pos: int = 0
    also: tuple[Period, ...] = ()  # in: more periods, any of which matches ("2023 or 2024")


Filter = ValueFilter | PeriodFilter


@dataclass(frozen=True)
class Comparison:
    """A measure in two periods side by side, with the change and the percentage change."""

    first: Period
    second: Period
    col: ColumnRef | None = None  # the date (or year) column; None until resolved
    by_percent: bool = False  # rank by percentage change rather than absolute change
    falling: bool = False  # the question asks for decreases: smallest change first


@dataclass(frozen=True)
class Share:
    within: Dimension | None = None  # None: a share of the grand total


OrderKey = Literal["measure", "label", "time"]


@dataclass(frozen=True)
class Order:
    key: OrderKey
    desc: bool


@dataclass
class QuerySpec:
    measures: list[Measure] = field(default_factory=list)
    dims: list[Dimension] = field(default_factory=list)
    filters: list[Filter] = field(default_factory=list)
    share: Share | None = None
    ratio: list[Filter] | None = None  # "what percentage of X are Y": the Y conditions
    comparison: Comparison | None = None
    order: Order | None = None
    limit: int | None = None
    rows: bool = False  # whole rows rather than aggregates
    rank_col: ColumnRef | None = None  # rows: the column they are ranked by
    noun: str = "rows"  # the user's word for one row of the table, plural
    single_date_col: bool = True  # the table has one date column: sentences need not name it

    @property
    def time_dim(self) -> Dimension | None:
        return next((d for d in self.dims if d.grain is not None), None)
