"""How a result reads: what the plan says its columns are, and how each one is shown.

- `ResultShape` comes from the planner (on `script_generated`, copied onto
  `execution_completed`): which columns are dimensions (and at which time grain) and which
  are measures (percentages among them), which one answers the question, how the rows are
  ordered, and whether they are whole records rather than aggregates. A planner that cannot
  say (an LLM's free SQL) sends none, and readers fall back on the column types.
- `ColumnFormat` comes from the execution worker, which knows the column types and the
  values: the display form of every value of a column (`execution_completed.display_rows`)
  is computed from it, so the chat, the table and the chart read the same number while
  `rows` (and `result.csv`) keep full precision.
"""

from __future__ import annotations

from typing import Literal

import msgspec

# The period one value of a time dimension stands for. day..year are points on a time
# axis; weekday, month_of_year and hour (of the day, 0-23) recur: they are categories with
# a natural order, not a time line.
Grain = Literal["day", "week", "month", "quarter", "year", "weekday", "month_of_year", "hour"]
TIME_AXIS_GRAINS: tuple[Grain, ...] = ("day", "week", "month", "quarter", "year")

ColumnRole = Literal["dimension", "measure"]
ShapeKind = Literal["aggregate", "comparison", "rows"]
OrderKey = Literal["measure", "label", "time"]


class ColumnHint(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    role: ColumnRole
    grain: Grain | None = None  # a time dimension's period
    # A measure's aggregate: "sum", "count", "avg", ... (sums and counts add up to a whole).
    agg: str | None = None
    percent: bool = False  # a percentage on a 0-100 scale


class ResultShape(msgspec.Struct, frozen=True, kw_only=True):
    kind: ShapeKind = "aggregate"
    columns: list[ColumnHint] = msgspec.field(default_factory=list)
    # The column that answers the question (a share's percentage, a comparison's change).
    value: str | None = None
    order: OrderKey | None = None
    descending: bool = False
    limit: int | None = None  # top/bottom N

    def hint(self, name: str) -> ColumnHint | None:
        return next((c for c in self.columns if c.name == name), None)


FormatKind = Literal["integer", "decimal", "percent", "date", "timestamp", "boolean", "text"]


class ColumnFormat(msgspec.Struct, frozen=True, kw_only=True):
    """How one column's values are displayed (the rule is in docs/engine.md)."""

    name: str
    kind: FormatKind
    decimals: int = 0  # integer, decimal, percent
    grouping: bool = True  # thousands separators (not for years, hours or ids)
    grain: Grain | None = None  # dates, and integer years or hours
