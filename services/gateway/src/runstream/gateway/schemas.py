"""The HTTP API's types: request bodies, parameters and responses (msgspec).

Litestar decodes request bodies into these and derives the OpenAPI document from them;
read-model rows are converted into them (`load`), so a response is always what the
document says it is.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from litestar.params import HeaderParameter, PathParameter, QueryParameter

from runstream.contracts import (
    ID_PATTERN,
    Column,
    DatasetRef,
    ErrorInfo,
    LogLevel,
    MessageStatus,
    TaskStatus,
)

T = TypeVar("T")

# --- limits a schema can state ---------------------------------------------------------
MAX_JSON_BYTES = 64 * 1024
TITLE_MAX_CHARS = 200
QUESTION_MAX_CHARS = 8 * 1024  # and at most RUNSTREAM_QUESTION_MAX_BYTES of UTF-8
ADJUSTMENT_MAX_CHARS = 1000
NAME_MAX_CHARS = 200
NOT_BLANK = r"\S"  # at least one character that is not whitespace

# --- parameters -----------------------------------------------------------------------
_ID_DOC = "URL-safe id: letters, digits, '-' and '_', at most 64 characters."
SessionId = Annotated[str, PathParameter(pattern=ID_PATTERN, description=_ID_DOC)]
MessageId = Annotated[str, PathParameter(pattern=ID_PATTERN, description=_ID_DOC)]
TaskId = Annotated[str, PathParameter(pattern=ID_PATTERN, description=_ID_DOC)]
Seq = Annotated[int, msgspec.Meta(ge=0)]
MinSeq = Annotated[int, QueryParameter(
    ge=0, description="A stream sequence the caller has seen: the read waits (bounded) until "
    "the read models reflect it, so a read never goes back in time.")]
# Optional headers and query parameters are strings with a pattern and an empty default,
# never nullable: a query string or a header has no null.
SEQ_TEXT = r"^[0-9]{0,18}$"
AfterSeq = Annotated[str, QueryParameter(
    pattern=SEQ_TEXT, description="Resume after this stream sequence (Last-Event-ID wins "
    "when both are sent); without either, a stream starts with what the snapshot lacks.")]
LastEventId = Annotated[str, HeaderParameter(
    name="Last-Event-ID", pattern=SEQ_TEXT,
    description="The `id` of the last frame received: the stream resumes after it.")]
Prefer = Annotated[str, HeaderParameter(
    name="Prefer", max_length=200,
    description="`wait=N` (RFC 7240): wait up to N seconds (capped) for the analysis to "
    "settle and answer 200 with the message; other preferences are ignored.")]


# --- errors ---------------------------------------------------------------------------
class ErrorDetail(msgspec.Struct, kw_only=True):
    code: str
    message: str
    details: dict[str, Any] = msgspec.field(default_factory=dict)


class ErrorBody(msgspec.Struct, kw_only=True):
    """Every error the API answers: a stable `code`, a readable `message`, `details`."""

    error: ErrorDetail


class ConflictBody(ErrorBody, kw_only=True):
    """A 409 of a submit: `active_message_id` names the analysis that holds the session."""

    active_message_id: str | None = None


# --- requests -------------------------------------------------------------------------
class CreateSession(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    title: Annotated[str, msgspec.Meta(max_length=TITLE_MAX_CHARS)] = ""


class RenameSession(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    title: Annotated[str, msgspec.Meta(min_length=1, max_length=TITLE_MAX_CHARS,
                                       pattern=NOT_BLANK)]


class SubmitAnalysis(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    question: Annotated[str, msgspec.Meta(
        min_length=1, max_length=QUESTION_MAX_CHARS, pattern=NOT_BLANK,
        description="At most RUNSTREAM_QUESTION_MAX_BYTES (8192) bytes of UTF-8.")]
    dataset_id: Annotated[str, msgspec.Meta(pattern=ID_PATTERN)] | None = None


class ChartRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    adjustment_query: Annotated[str, msgspec.Meta(max_length=ADJUSTMENT_MAX_CHARS)] | None = None
    force_create: bool = False


# --- sessions -------------------------------------------------------------------------
class LockInfo(msgspec.Struct, kw_only=True):
    message_id: str
    acquired_at: datetime
    expires_at: datetime


class SessionSummary(msgspec.Struct, kw_only=True):
    session_id: str
    owner: str
    title: str
    created_at: datetime
    status: Literal["idle", "analyzing"]
    active_message_id: str | None = None
    last_activity_at: datetime | None = None
    last_settled_at: datetime | None = None
    last_read_at: datetime | None = None
    has_notification: bool = False
    last_seq: Seq = 0


class Session(SessionSummary, kw_only=True):
    lock: LockInfo | None = None
    as_of_seq: Seq = 0
    # False when the projector had not caught up yet: the answer was built from the event.
    projected: bool = True


class SessionList(msgspec.Struct, kw_only=True):
    sessions: list[SessionSummary]
    as_of_seq: Seq


# --- datasets -------------------------------------------------------------------------
DatasetFormat = Literal["csv", "parquet"]


class Dataset(msgspec.Struct, kw_only=True):
    dataset_id: str
    session_id: str
    name: str
    format: DatasetFormat
    object_name: str
    table_name: str
    size_bytes: int
    row_count: int
    columns: list[Column]
    sample_rows: list[list[Any]]
    created_at: datetime


class DatasetList(msgspec.Struct, kw_only=True):
    datasets: list[Dataset]


class DatasetCreated(msgspec.Struct, kw_only=True):
    dataset_id: str
    session_id: str
    name: str
    format: DatasetFormat
    size_bytes: int
    row_count: int
    columns: list[Column]
    sample_rows: list[list[Any]]
    as_of_seq: Seq


# --- messages -------------------------------------------------------------------------
class Step(msgspec.Struct, kw_only=True):
    step: str
    idx: int
    total: int
    status: TaskStatus  # a step has the task vocabulary: it never expires
    progress: float
    detail: str
    attempt: int
    started_at: datetime | None = None
    ended_at: datetime | None = None
    duration_ms: int | None = None
    error: str | None = None
    error_code: str | None = None
    eta_ms: int | None = None


class Log(msgspec.Struct, kw_only=True):
    seq: Seq
    event_id: str
    at: datetime
    level: LogLevel
    text: str
    step: str | None = None


class Chart(msgspec.Struct, kw_only=True):
    chart_id: str
    task_id: str
    message_id: str
    session_id: str
    kind: str
    title: str
    spec: dict[str, Any] | None = None
    svg: str | None = None
    created_at: datetime


class Script(msgspec.Struct, kw_only=True):
    sql: str
    explanation: str = ""
    interpretation: str = ""
    planner: str = ""
    dataset: DatasetRef | None = None


class Result(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The result as the projector stores it; the optional parts are absent, not null,
    when the event had none (as in the stored JSON)."""

    columns: list[Column]
    rows: list[list[Any]]  # raw values, full precision
    row_count: int
    truncated: bool
    markdown: str
    duration_ms: int
    interpretation: str | None = None  # one sentence: what was computed
    # Per column, how it is displayed, and every row in that display form (strings).
    formats: list[dict[str, Any]] | None = None
    display_rows: list[list[str | None]] | None = None


class MessageSummary(msgspec.Struct, kw_only=True):
    message_id: str
    session_id: str
    role: Literal["user", "assistant"]
    owner: str
    user_message_id: str | None = None
    reply_message_id: str | None = None
    question: str
    content: str | None = None
    status: MessageStatus
    attempt: int
    created_at: datetime
    started_at: datetime | None = None
    settled_at: datetime | None = None
    settled_seq: Seq | None = None
    summary: str | None = None
    error: ErrorInfo | None = None
    result: Result | None = None
    script: Script | None = None
    retry_of: str | None = None
    dataset_id: str | None = None
    last_seq: Seq
    charts: list[Chart] = msgspec.field(default_factory=list)


class Message(MessageSummary, kw_only=True):
    steps: list[Step] = msgspec.field(default_factory=list)
    logs: list[Log] = msgspec.field(default_factory=list)
    as_of_seq: Seq


class MessageHistory(msgspec.Struct, kw_only=True):
    session_id: str
    messages: list[MessageSummary]
    as_of_seq: Seq


class LogPage(msgspec.Struct, kw_only=True):
    message_id: str
    logs: list[Log]
    has_more: bool
    as_of_seq: Seq


class AnalysisStatus(msgspec.Struct, kw_only=True):
    """The page-refresh call: the active analysis, else the latest one (None before any)."""

    session_id: str
    is_analyzing: bool
    message_id: str | None = None
    status: MessageStatus | None = None
    logs: list[Log]
    steps: list[Step]
    lock: LockInfo | None = None
    # What a steady ETA needs (docs/ui.md): the running mean duration of each step (ms), and
    # the gateway's clock when it answered, so that a page measures a running step's elapsed
    # time against the clock its `started_at` came from, not its own.
    step_estimates: dict[str, Annotated[int, msgspec.Meta(ge=0)]] = msgspec.field(
        default_factory=dict)
    server_time: datetime
    as_of_seq: Seq


class SubmitAccepted(msgspec.Struct, kw_only=True):
    message_id: str
    user_message_id: str
    session_id: str
    status: Literal["pending"] = "pending"
    as_of_seq: Seq
    retry_of: str | None = None


class Cancelled(msgspec.Struct, kw_only=True):
    message_id: str
    status: Literal["cancelled"] = "cancelled"
    as_of_seq: Seq


# --- charts ---------------------------------------------------------------------------
class ChartTaskSummary(msgspec.Struct, kw_only=True):
    task_id: str
    message_id: str
    session_id: str
    owner: str
    status: TaskStatus
    progress: float
    current_step: str | None = None
    step_progress: float
    eta_ms: int | None = None
    adjustment_query: str | None = None
    force_create: bool
    auto: bool
    cancel_requested: bool
    error: str | None = None
    error_code: str | None = None
    created_at: datetime
    updated_at: datetime
    last_seq: Seq


class ChartTask(ChartTaskSummary, kw_only=True):
    chart: Chart | None = None
    as_of_seq: Seq


class ChartList(msgspec.Struct, kw_only=True):
    message_id: str
    charts: list[Chart]
    active_tasks: list[ChartTaskSummary]
    has_active_tasks: bool
    as_of_seq: Seq


class ChartTaskAccepted(msgspec.Struct, kw_only=True):
    task_id: str
    message_id: str
    status: TaskStatus
    reused: bool  # an active task of the message answered instead of a new one
    as_of_seq: Seq


class ChartTaskCancelled(msgspec.Struct, kw_only=True):
    task_id: str
    status: Literal["cancelled"] = "cancelled"
    as_of_seq: Seq


# --- streams and tokens ---------------------------------------------------------------
class StreamToken(msgspec.Struct, kw_only=True):
    token: str
    expires_at: int  # Unix time
    ttl_s: int


# --- operations -----------------------------------------------------------------------
class Health(msgspec.Struct, kw_only=True):
    status: Literal["ok"] = "ok"


class Readiness(msgspec.Struct, kw_only=True):
    status: Literal["ready", "starting", "unavailable"]
    checks: dict[str, str]  # dependency -> "ok" or "down: <why>"


class StreamStats(msgspec.Struct, kw_only=True):
    name: str
    messages: int
    bytes: int
    first_seq: Seq
    last_seq: Seq


class ConsumerStats(msgspec.Struct, kw_only=True):
    """One consumer on the stream, as `runstream status` lists it."""

    name: str
    # durable: a worker's; reader / replay: ephemeral, one process's ordered reader (the
    # projector, a rebuild) or history replay (an SSE or WebSocket catch-up, `tail`).
    kind: Literal["durable", "reader", "replay"] = "durable"
    ephemeral: bool = False
    pending: int | None = None
    ack_pending: int | None = None
    redelivered: int | None = None
    waiting: int | None = None
    delivered_seq: int | None = None
    # the stream it reads: the event stream, or with P > 1 partitioned projectors their
    # view `<stream>_P<P>` (whose sequences `delivered_seq` then counts)
    stream: str | None = None


class ProjectorStats(msgspec.Struct, kw_only=True):
    checkpoint: Seq
    lag: Seq


class GatewayStats(msgspec.Struct, kw_only=True):
    stream_clients: int
    # of those, live SSE clients the hub writes to directly (docs/streams.md, "Fan-out")
    stream_clients_direct: int
    events_per_second: float
    live_position: Seq


class Stats(msgspec.Struct, kw_only=True):
    stream: StreamStats
    consumers: list[ConsumerStats]
    workers_seen: list[str]
    projector: ProjectorStats
    gateway: GatewayStats


class DevToken(msgspec.Struct, kw_only=True):
    token: str


def load(kind: type[T], row: Any) -> T:
    """A read-model row (a dict from the queries) as its API type, checked on the way."""
    return msgspec.convert(row, kind)
