"""The session aggregate: subject `<prefix>.<session_id>.session`.

Every session event carries the full lock state *after* it, so the last event on the
subject alone is the current state of the aggregate.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from runstream.contracts.base import Column, DeadLetter, ErrorInfo, Event
from runstream.contracts.status import SettledStatus


class Lock(msgspec.Struct, frozen=True, kw_only=True):
    message_id: str
    acquired_at: datetime
    expires_at: datetime

    def held_at(self, now: datetime) -> bool:
        return self.expires_at > now


class SessionEvent(Event, frozen=True, kw_only=True):
    lock: Lock | None = None


class SessionCreated(SessionEvent, frozen=True, kw_only=True, tag="session_created"):
    owner: str
    title: str = ""


class DatasetAttached(SessionEvent, frozen=True, kw_only=True, tag="dataset_attached"):
    dataset_id: str
    name: str
    format: str  # "csv" | "parquet"
    object_name: str  # key in the datasets Object Store bucket
    size_bytes: int
    row_count: int
    columns: list[Column]
    sample_rows: list[list[Any]] = msgspec.field(default_factory=list)
    table_name: str = "data"


class AnalysisRequested(SessionEvent, frozen=True, kw_only=True, tag="analysis_requested"):
    message_id: str
    user_message_id: str
    owner: str
    question: str
    dataset_id: str | None = None
    retry_of: str | None = None


class LockRenewed(SessionEvent, frozen=True, kw_only=True, tag="lock_renewed"):
    message_id: str
    stage: str = ""


class AnalysisSettled(SessionEvent, frozen=True, kw_only=True, tag="analysis_settled"):
    """The one terminal event of an analysis."""

    message_id: str
    status: SettledStatus
    summary: str | None = None
    error: ErrorInfo | None = None
    dead_letter: DeadLetter | None = None


class SessionRead(SessionEvent, frozen=True, kw_only=True, tag="session_read"):
    """The owner has seen everything settled up to now (clears has_notification)."""

    owner: str


class SessionRenamed(SessionEvent, frozen=True, kw_only=True, tag="session_renamed"):
    """The owner named the session (a session without a name takes its first question)."""

    owner: str
    title: str


SessionEventT = (
    SessionCreated
    | DatasetAttached
    | AnalysisRequested
    | LockRenewed
    | AnalysisSettled
    | SessionRead
    | SessionRenamed
)
SESSION_EVENTS: tuple[type[SessionEvent], ...] = (
    SessionCreated,
    DatasetAttached,
    AnalysisRequested,
    LockRenewed,
    AnalysisSettled,
    SessionRead,
    SessionRenamed,
)
