"""What a planner takes (a question about one table) and gives back (one DuckDB query)."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import msgspec

from runstream.contracts import Column, ResultShape


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    sql: str
    # One plain sentence of what the SQL computes, shown above the result.
    interpretation: str
    # How the question was read: the interpretation plus any assumption made on the way.
    explanation: str
    planner: str
    chart_hint: str | None = None  # "bar" | "line" | "scatter" | None
    # What the result's columns are (dimensions and grains, measures, percentages); None
    # when the planner cannot say (free SQL from a model).
    shape: ResultShape | None = None


class PlanningContext(msgspec.Struct, frozen=True, kw_only=True):
    question: str
    columns: list[Column]
    table_name: str = "data"
    dataset_name: str = ""  # "employees.csv": names what one row is
    sample_rows: list[list[Any]] = msgspec.field(default_factory=list)
    # Text column -> its distinct values (low-cardinality columns only), so "in Poland"
    # can be read as a filter on the column that holds "Poland".
    values: dict[str, list[str]] = msgspec.field(default_factory=dict)
    # Earlier (question, answer summary) pairs of the session, oldest first.
    history: list[tuple[str, str]] = msgspec.field(default_factory=list)


@runtime_checkable
class Planner(Protocol):
    name: str

    async def plan(self, ctx: PlanningContext) -> Plan: ...


PLANNER_KINDS = ("rules", "openai")
