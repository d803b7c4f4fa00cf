"""Which events the read models refuse (`Poison`), decided before an event changes anything.

Refused: an orphan (its session, message or chart task does not exist), an event naming
a message or chart task of another session, a log of an older attempt, and a log after
the settle that ends none of the message's steps. The projector stores each as a poison
row and folding goes on.
"""

from __future__ import annotations

from runstream.contracts import (
    MESSAGE_TERMINAL,
    AnalysisSettled,
    ChartEvent,
    ChartRequested,
    Event,
    LogAppended,
    MessageEvent,
    SessionCreated,
    SessionEvent,
)
from runstream.projector.fold.state import Row, State


class Poison(Exception):
    """The fold refuses this event: it becomes a poison row with `reason`, nothing else."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def admit(state: State, event: Event) -> None:
    """Raise Poison for an event the read models must not take."""
    match event:
        case SessionCreated():
            pass
        case AnalysisSettled():
            _session(state, event.session_id)
            _message(state, event.message_id, event.session_id)
        case SessionEvent():
            _session(state, event.session_id)
        case LogAppended():
            _log(state, event, _message(state, event.message_id, event.session_id))
        case MessageEvent():
            _message(state, event.message_id, event.session_id)
        case ChartRequested():
            _session(state, event.session_id)
            _message(state, event.message_id, event.session_id)
        case ChartEvent():
            _task(state, event.task_id, event.session_id)
        case _:
            pass  # no aggregate to check


def _session(state: State, session_id: str) -> None:
    if state.sessions.get(session_id) is None:
        raise Poison(f"orphan: session {session_id} does not exist")


def _message(state: State, message_id: str, session_id: str) -> Row:
    row = state.messages.get(message_id)
    if row is None:
        raise Poison(f"orphan: message {message_id} does not exist")
    if row["session_id"] != session_id:
        raise Poison(
            f"mismatch: message {message_id} belongs to session {row['session_id']}, "
            f"not {session_id}"
        )
    return row


def _task(state: State, task_id: str, session_id: str) -> None:
    row = state.tasks.get(task_id)
    if row is None:
        raise Poison(f"orphan: chart task {task_id} does not exist")
    if row["session_id"] != session_id:
        raise Poison(
            f"mismatch: chart task {task_id} belongs to session {row['session_id']}, "
            f"not {session_id}"
        )


def _log(state: State, event: LogAppended, message: Row) -> None:
    """A log of an older attempt never lands; after the settle, only a log that ends one
    of the settled attempt's steps does (a worker finishing the step it was in when the
    analysis was cancelled). Anything else would rewrite a finished story."""
    mid, status, attempt = event.message_id, message["status"], message["attempt"]
    if event.attempt < attempt:
        raise Poison(
            f"stale log: attempt {event.attempt} of message {mid}, which is at attempt {attempt}"
        )
    if status not in MESSAGE_TERMINAL:
        return
    if event.attempt != attempt:
        raise Poison(
            f"late log: attempt {event.attempt} of message {mid}, "
            f"settled {status} at attempt {attempt}"
        )
    if not event.step:
        raise Poison(f"late log: message {mid} is settled {status} and the log has no step")
    if state.steps.rows.get((mid, event.step)) is None:
        raise Poison(f"late log: message {mid} is settled {status} and never ran step {event.step}")
