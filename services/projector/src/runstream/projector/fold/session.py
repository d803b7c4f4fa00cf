"""The session aggregate: sessions, their lock, datasets, and what settling does to them."""

from __future__ import annotations

from typing import Any

import msgspec

from runstream.contracts import (
    AnalysisRequested,
    AnalysisSettled,
    DatasetAttached,
    SessionCreated,
    SessionEvent,
    SessionRead,
    SessionRenamed,
)
from runstream.projector.fold.state import State, aware


def fold_session(state: State, seq: int, event: SessionEvent) -> None:
    """The session's own rows for one admitted session event (messages: `message`)."""
    sid = event.session_id
    at = aware(event.at)
    match event:
        case SessionCreated():
            if state.sessions.get(sid) is None:
                state.sessions.put(sid, {
                    "session_id": sid, "owner": event.owner, "title": event.title,
                    "created_at": at, "status": "idle", "active_message_id": None,
                    "last_activity_at": at, "last_settled_at": None, "last_read_at": None,
                    "has_notification": False, "last_seq": seq,
                })  # fmt: skip
        case DatasetAttached():
            state.datasets.add({
                "dataset_id": event.dataset_id, "session_id": sid, "name": event.name,
                "format": event.format, "object_name": event.object_name,
                "table_name": event.table_name, "size_bytes": event.size_bytes,
                "row_count": event.row_count, "columns": builtins(event.columns),
                "sample_rows": event.sample_rows, "created_at": at, "last_seq": seq,
            })  # fmt: skip
        case AnalysisRequested():
            session = state.sessions.get(sid)
            assert session is not None  # admitted
            title = session["title"] or untitled(event.question)
            state.sessions.change(
                sid, status="analyzing", active_message_id=event.message_id, title=title
            )
        case SessionRenamed():
            state.sessions.change(sid, title=event.title)
        case AnalysisSettled():
            if state.sessions.get(sid)["active_message_id"] == event.message_id:  # type: ignore[index]
                state.sessions.change(sid, status="idle", active_message_id=None)
        case SessionRead():
            state.sessions.change(sid, last_read_at=at, has_notification=False)
        case _:
            pass  # lock_renewed: the lock below, as for every session event
    _sync_lock(state, event)


def settled_session(state: State, event: AnalysisSettled) -> None:
    """A message that really settled (not a second settle) notifies its session."""
    state.sessions.change(event.session_id, last_settled_at=aware(event.at), has_notification=True)


def _sync_lock(state: State, event: SessionEvent) -> None:
    """Every session event carries the whole lock state after it: mirror it exactly."""
    lock = event.lock
    state.locks[event.session_id] = None if lock is None else {
        "session_id": event.session_id, "message_id": lock.message_id,
        "acquired_at": aware(lock.acquired_at), "expires_at": aware(lock.expires_at),
    }  # fmt: skip


TITLE_FROM_QUESTION_CHARS = 80


def untitled(question: str) -> str:
    """A session nobody named is called by its first question (cut on a word)."""
    text = " ".join(question.split())
    if len(text) <= TITLE_FROM_QUESTION_CHARS:
        return text
    cut = text[: TITLE_FROM_QUESTION_CHARS - 1].rsplit(" ", 1)[0]
    return cut + "…"


def builtins(value: Any) -> Any:
    return msgspec.to_builtins(value) if value is not None else None
