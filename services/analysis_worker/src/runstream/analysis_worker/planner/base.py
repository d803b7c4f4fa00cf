"""What a planner takes (a question about one table) and gives back (one DuckDB query)."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import msgspec

from runstream.contracts import Column


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    sql: str
    # One plain sentence of what the SQL computes, shown above the result.
    interpretation: str
    # How the question was read: the interpretation plus any assumption made on the way.
    explanation: str
    planner: str
    chart_hint: str | None = None  # "bar" | "line" | "scatter" | None


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


def build_planner(
    kind: str,
    *,
    openai_base_url: str | None = None,
    openai_model: str | None = None,
    openai_api_key: str | None = None,
    timeout_s: float = 30.0,
) -> Planner:
    """The planner named by settings (`rules` needs nothing; `openai` needs a URL and model)."""
    if kind == "rules":
        from runstream.analysis_worker.planner.rules import RulesPlanner

        return RulesPlanner()
    if kind == "openai":
        from runstream.analysis_worker.planner.openai import OpenAIPlanner

        if not openai_base_url or not openai_model:
            raise ValueError("the openai planner needs openai_base_url and openai_model")
        return OpenAIPlanner(
            base_url=openai_base_url,
            model=openai_model,
            api_key=openai_api_key,
            timeout_s=timeout_s,
        )
    raise ValueError(f"unknown planner {kind!r}; expected one of {', '.join(PLANNER_KINDS)}")
