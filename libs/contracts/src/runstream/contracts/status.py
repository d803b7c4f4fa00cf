"""The status vocabulary: what a message or a chart task can be, and which states end it.

Every package that asks "is this settled?" asks here: the fold, the queries, the
gateway's streams and routes, and the workers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, get_args

MessageStatus = Literal["pending", "running", "completed", "failed", "cancelled", "expired"]
SettledStatus = Literal["completed", "failed", "cancelled", "expired"]
TaskStatus = Literal["pending", "running", "completed", "failed", "cancelled"]

ACTIVE: frozenset[str] = frozenset({"pending", "running"})
MESSAGE_TERMINAL: frozenset[str] = frozenset(get_args(SettledStatus))
TASK_TERMINAL: frozenset[str] = frozenset(get_args(TaskStatus)) - ACTIVE

# Event types that end a stream: one message's, one chart task's.
MESSAGE_END_TYPE = "analysis_settled"
TASK_END_TYPES: frozenset[str] = frozenset({"chart_completed", "chart_failed", "chart_cancelled"})


def is_terminal(status: str) -> bool:
    """A settled message: nothing changes its status any more."""
    return status in MESSAGE_TERMINAL


def is_task_terminal(status: str) -> bool:
    return status in TASK_TERMINAL


def sql_list(statuses: Iterable[str]) -> str:
    """`('a', 'b')` for a SQL `IN` over a fixed vocabulary (never user input)."""
    return "(" + ", ".join(f"'{s}'" for s in sorted(statuses)) + ")"
