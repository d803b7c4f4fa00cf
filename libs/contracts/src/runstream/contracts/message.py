"""The message aggregate: subject `<prefix>.<session_id>.msg.<message_id>.<type>`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from runstream.contracts.base import Column, Event, LogLevel
from runstream.contracts.limits import LOG_TEXT_MAX_BYTES
from runstream.contracts.result import ColumnFormat, ResultShape

ExecutionErrorKind = Literal["sql", "timeout", "memory", "sandbox", "cancelled"]


class MessageEvent(Event, frozen=True, kw_only=True):
    message_id: str
    attempt: int = 1


class AnalysisStarted(MessageEvent, frozen=True, kw_only=True, tag="analysis_started"):
    worker: str = ""


class StepStarted(MessageEvent, frozen=True, kw_only=True, tag="step_started"):
    step: str
    index: int  # 1-based
    total: int
    eta_ms: int | None = None


class StepProgressed(MessageEvent, frozen=True, kw_only=True, tag="step_progressed"):
    step: str
    progress: float  # 0..100
    detail: str = ""


class StepCompleted(MessageEvent, frozen=True, kw_only=True, tag="step_completed"):
    step: str
    duration_ms: int


class StepFailed(MessageEvent, frozen=True, kw_only=True, tag="step_failed"):
    step: str
    error: str
    code: str = "failed"
    retryable: bool = False
    duration_ms: int | None = None


# Documentation only (no max_length): an older or foreign publisher's longer text must
# still decode, so the projector can cut it instead of losing the event.
LogText = Annotated[
    str,
    msgspec.Meta(
        description=f"At most {LOG_TEXT_MAX_BYTES} bytes of UTF-8: publishers refuse longer "
        "text and the projector truncates it."
    ),
]


class LogAppended(MessageEvent, frozen=True, kw_only=True, tag="log_appended"):
    level: LogLevel = "info"
    text: LogText
    step: str | None = None


class DatasetRef(msgspec.Struct, frozen=True, kw_only=True):
    dataset_id: str
    name: str
    format: str
    object_name: str
    table_name: str = "data"


class ScriptGenerated(MessageEvent, frozen=True, kw_only=True, tag="script_generated"):
    sql: str
    explanation: str
    planner: str
    dataset: DatasetRef | None = None
    question: str = ""
    # One plain sentence of what the SQL computes, shown above the result.
    interpretation: str = ""
    # What the result's columns will be (dimensions, grains, measures), when the planner knows.
    shape: ResultShape | None = None


class ExecutionStarted(MessageEvent, frozen=True, kw_only=True, tag="execution_started"):
    limits: dict[str, Any] = msgspec.field(default_factory=dict)


class ExecutionCompleted(MessageEvent, frozen=True, kw_only=True, tag="execution_completed"):
    columns: list[Column]
    rows: list[list[Any]]
    row_count: int
    truncated: bool = False
    markdown: str = ""
    duration_ms: int = 0
    question: str = ""
    # Copied from script_generated, so a reader of the result needs no other event.
    interpretation: str = ""
    shape: ResultShape | None = None
    # Per column, how it is displayed; and every row of `rows` in that display form
    # (strings, null for null). `rows` keeps the raw values at full precision.
    formats: list[ColumnFormat] = msgspec.field(default_factory=list)
    display_rows: list[list[str | None]] = msgspec.field(default_factory=list)


class ExecutionFailed(MessageEvent, frozen=True, kw_only=True, tag="execution_failed"):
    kind: ExecutionErrorKind
    error: str
    duration_ms: int = 0


class CancelRequested(MessageEvent, frozen=True, kw_only=True, tag="cancel_requested"):
    requested_by: str = ""


MessageEventT = (
    AnalysisStarted
    | StepStarted
    | StepProgressed
    | StepCompleted
    | StepFailed
    | LogAppended
    | ScriptGenerated
    | ExecutionStarted
    | ExecutionCompleted
    | ExecutionFailed
    | CancelRequested
)
MESSAGE_EVENTS: tuple[type[MessageEvent], ...] = (
    AnalysisStarted,
    StepStarted,
    StepProgressed,
    StepCompleted,
    StepFailed,
    LogAppended,
    ScriptGenerated,
    ExecutionStarted,
    ExecutionCompleted,
    ExecutionFailed,
    CancelRequested,
)
