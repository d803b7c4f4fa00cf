"""The message aggregate: the question and its answer, their script, result and logs.

Terminal statuses are sticky: once a message is settled, later events never change it;
only the log lines that end one of its steps may still land (`admit`). Steps and their
running means: `steps`.
"""

from __future__ import annotations

import structlog

from runstream.contracts import (
    ACTIVE,
    LOG_TEXT_MAX_BYTES,
    MESSAGE_TERMINAL,
    AnalysisRequested,
    AnalysisSettled,
    AnalysisStarted,
    ExecutionCompleted,
    ExecutionFailed,
    LogAppended,
    MessageEvent,
    ScriptGenerated,
    StepCompleted,
    StepFailed,
    StepProgressed,
    StepStarted,
    truncate_text,
)
from runstream.projector.fold.session import builtins, settled_session
from runstream.projector.fold.state import Row, State, aware
from runstream.projector.fold.steps import fold_step

logger = structlog.get_logger()


def requested(state: State, seq: int, event: AnalysisRequested) -> None:
    """The user's question and the pending answer, ordered by stream position."""
    at = aware(event.at)
    common = {
        "session_id": event.session_id, "owner": event.owner, "question": event.question,
        "attempt": 1, "created_at": at, "started_at": None, "settled_at": None,
        "summary": None, "error": None, "result": None, "script": None,
        "retry_of": event.retry_of, "dataset_id": event.dataset_id, "last_seq": seq,
        "settled_seq": None,
    }  # fmt: skip
    user, answer = event.user_message_id, event.message_id
    if state.messages.get(user) is None:
        state.messages.put(user, {
            **common, "message_id": user, "role": "user", "user_message_id": None,
            "reply_message_id": answer, "content": event.question, "status": "completed",
            "sort_key": seq * 2,
        })  # fmt: skip
    if state.messages.get(answer) is None:
        state.messages.put(answer, {
            **common, "message_id": answer, "role": "assistant", "user_message_id": user,
            "reply_message_id": None, "content": None, "status": "pending",
            "sort_key": seq * 2 + 1,
        })  # fmt: skip


def settled(state: State, seq: int, event: AnalysisSettled) -> None:
    mid = event.message_id
    message = state.messages.get(mid)
    assert message is not None  # admitted
    if message["status"] not in MESSAGE_TERMINAL:  # not a second settle
        error = builtins(event.error)
        if error is None:
            error = None if event.status == "completed" else message["error"]
        at = aware(event.at)
        state.messages.change(
            mid, status=event.status, summary=event.summary, content=event.summary,
            settled_at=at, error=error, settled_seq=seq,
        )  # fmt: skip
        # Steps still open when the analysis ends did not finish: close them.
        closed = event.status if event.status in ("failed", "completed") else "cancelled"
        for name in state.step_names(mid):
            step = state.steps.get((mid, name))
            if step is not None and step["status"] in ACTIVE:
                ended = step["ended_at"] if step["ended_at"] is not None else at
                state.steps.change((mid, name), status=closed, ended_at=ended, eta_ms=None)
        settled_session(state, event)
    if event.dead_letter is not None:
        dl = event.dead_letter
        reason = event.error.message if event.error else (event.summary or event.status)
        state.dead_letters.add({
            "seq": seq, "message_id": mid, "session_id": event.session_id,
            "consumer": dl.consumer, "stream_seq": dl.stream_seq, "deliveries": dl.deliveries,
            "subject": dl.subject, "reason": reason, "at": aware(event.at),
        })  # fmt: skip


def fold_message(state: State, seq: int, event: MessageEvent) -> None:
    """One admitted message event."""
    mid = event.message_id
    message = state.messages.get(mid)
    assert message is not None  # admitted
    if isinstance(event, LogAppended):
        _log(state, seq, event)
        return
    if message["status"] in MESSAGE_TERMINAL:
        return  # a late event of a settled analysis changes nothing
    match event:
        case AnalysisStarted():
            started = message["started_at"]
            state.messages.change(
                mid, status="running", attempt=max(message["attempt"], event.attempt),
                started_at=started if started is not None else aware(event.at),
            )  # fmt: skip
        case StepStarted() | StepProgressed() | StepCompleted() | StepFailed():
            fold_step(state, seq, event)
        case ScriptGenerated():
            state.messages.change(mid, script={
                "sql": event.sql, "explanation": event.explanation,
                "interpretation": event.interpretation, "planner": event.planner,
                "dataset": builtins(event.dataset),
            })  # fmt: skip
        case ExecutionCompleted():
            state.messages.change(mid, result=_result(message, event), error=None)
        case ExecutionFailed():
            # Only the detail: the status changes on analysis_settled alone.
            state.messages.change(mid, error={
                "code": event.kind, "message": event.error, "step": "execute",
                "details": {"duration_ms": event.duration_ms},
            })  # fmt: skip
        case _:
            pass  # execution_started, cancel_requested, future types: positions only


def _result(message: Row, event: ExecutionCompleted) -> dict[str, object]:
    result: dict[str, object] = {
        "columns": builtins(event.columns), "rows": event.rows, "row_count": event.row_count,
        "truncated": event.truncated, "markdown": event.markdown,
        "duration_ms": event.duration_ms,
    }  # fmt: skip
    if event.display_rows:  # an older event has only the raw rows
        result["formats"] = builtins(event.formats)
        result["display_rows"] = event.display_rows
    # The result says what it is: the plan's interpretation, when the script had one.
    script = message["script"]
    interpretation = script.get("interpretation") if isinstance(script, dict) else None
    if interpretation not in (None, ""):
        result["interpretation"] = interpretation
    return result


def _log(state: State, seq: int, event: LogAppended) -> None:
    # An older or foreign publisher may send more than the contract allows.
    text, truncated = truncate_text(event.text, LOG_TEXT_MAX_BYTES)
    if truncated:
        logger.warning("projector.log_truncated", seq=seq, message_id=event.message_id)
    state.logs.add({
        "message_id": event.message_id, "seq": seq, "event_id": event.event_id,
        "session_id": event.session_id, "at": aware(event.at), "level": event.level,
        "text": text, "step": event.step, "truncated": truncated,
    })  # fmt: skip
