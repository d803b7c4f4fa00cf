"""Planners: turn a question about one table into one DuckDB SELECT."""

from runstream.analysis_worker.planner.base import (
    PLANNER_KINDS,
    Plan,
    Planner,
    PlanningContext,
)
from runstream.analysis_worker.planner.errors import (
    PlannerError,
    PlannerRequestRejected,
    PlannerResponseInvalid,
    PlannerUnavailable,
    UnanswerableQuestion,
)
from runstream.analysis_worker.planner.factory import build_planner

__all__ = [
    "PLANNER_KINDS",
    "Plan",
    "Planner",
    "PlannerError",
    "PlannerRequestRejected",
    "PlannerResponseInvalid",
    "PlannerUnavailable",
    "PlanningContext",
    "UnanswerableQuestion",
    "build_planner",
]
