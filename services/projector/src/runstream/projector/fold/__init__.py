"""The batch fold's pure half: events in, row changes out, no I/O.

`fold(state, seq, subject, data, event)` applies one decoded event at stream sequence
`seq` to the rows in `state`, in stream order. Everything it writes is deterministic in
(seq, event): times come from the event, never from the clock, so folding the same
stream twice, in any batch sizes, gives identical rows (rebuild relies on it). Each
aggregate has its own module: `session`, `message` (+ `steps`), `chart`; `admit` decides
which events are refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import structlog

from runstream.contracts import (
    AnalysisRequested,
    AnalysisSettled,
    ChartEvent,
    DecodeError,
    Event,
    MessageEvent,
    SessionEvent,
    decode,
)
from runstream.projector.fold.admit import Poison, admit
from runstream.projector.fold.chart import fold_chart
from runstream.projector.fold.message import fold_message, requested, settled
from runstream.projector.fold.session import fold_session
from runstream.projector.fold.state import Appends, Keys, Row, State, Table, aware, keys_of, later

logger = structlog.get_logger()

__all__ = [
    "Appends",
    "Batch",
    "Keys",
    "Poison",
    "Row",
    "State",
    "Table",
    "apply_positions",
    "fold",
    "keys_of",
    "poison",
]


class Batch:
    """A batch decoded: the events to fold in stream order, and the undecodable ones."""

    def __init__(self, items: Iterable[tuple[int, str, bytes]]) -> None:
        self.events: list[tuple[int, str, bytes, Event]] = []
        self.undecodable: list[tuple[int, str, bytes, str]] = []
        for seq, subject, data in items:
            try:
                self.events.append((seq, subject, data, decode(data)))
            except DecodeError as exc:
                self.undecodable.append((seq, subject, data, f"decode: {exc}"))

    @property
    def keys(self) -> Keys:
        """The rows to load before `fold_into`."""
        return keys_of(event for *_, event in self.events)

    def fold_into(self, state: State) -> State:
        for seq, subject, data, reason in self.undecodable:
            poison(state, seq, subject, data, reason)
        for seq, subject, data, event in self.events:
            fold(state, seq, subject, data, event)
        apply_positions(state)
        return state


def fold(state: State, seq: int, subject: str, data: bytes, event: Event) -> None:
    """Apply one event, or store it as a poison row when the read models refuse it."""
    try:
        admit(state, event)
    except Poison as refused:
        poison(state, seq, subject, data, refused.reason)
        return
    match event:
        case SessionEvent():
            if isinstance(event, AnalysisRequested):
                requested(state, seq, event)
            elif isinstance(event, AnalysisSettled):
                settled(state, seq, event)
            fold_session(state, seq, event)
        case MessageEvent():
            fold_message(state, seq, event)
        case ChartEvent():
            fold_chart(state, seq, event)
        case _:
            pass
    _positions(state, seq, event)


def poison(state: State, seq: int, subject: str, data: bytes, reason: str) -> None:
    logger.warning("projector.poison_event", seq=seq, subject=subject, error=reason)
    state.poison.add({"seq": seq, "subject": subject, "data": data, "error": reason})


def _positions(state: State, seq: int, event: Event) -> None:
    """What every event moves: the last_seq and activity of its session, message and
    chart task (only ever forward). Kept as maxima and applied once per row at the end
    of the batch (`apply_positions`): no reducer reads them."""
    at = aware(event.at)
    positions = state.positions
    if state.sessions.rows.get(event.session_id) is not None:
        positions.sessions[event.session_id] = _max(
            positions.sessions.get(event.session_id), seq, at
        )
    if isinstance(event, MessageEvent | AnalysisSettled):
        if state.messages.rows.get(event.message_id) is not None:
            positions.messages[event.message_id] = max(
                positions.messages.get(event.message_id, 0), seq
            )
    if isinstance(event, ChartEvent) and state.tasks.rows.get(event.task_id) is not None:
        positions.tasks[event.task_id] = _max(positions.tasks.get(event.task_id), seq, at)


def _max(current: tuple[int, datetime] | None, seq: int, at: datetime) -> tuple[int, datetime]:
    return (seq, at) if current is None else (max(current[0], seq), later(current[1], at))


def apply_positions(state: State) -> None:
    positions = state.positions
    for sid, (seq, at) in positions.sessions.items():
        row = state.sessions.rows[sid]
        assert row is not None
        state.sessions.change(sid, last_seq=max(row["last_seq"], seq),
                              last_activity_at=later(row["last_activity_at"], at))
    for mid, seq in positions.messages.items():
        row = state.messages.rows[mid]
        assert row is not None
        state.messages.change(mid, last_seq=max(row["last_seq"], seq))
    for tid, (seq, at) in positions.tasks.items():
        row = state.tasks.rows[tid]
        assert row is not None
        state.tasks.change(tid, last_seq=max(row["last_seq"], seq),
                           updated_at=later(row["updated_at"], at))
    positions.sessions.clear()
    positions.messages.clear()
    positions.tasks.clear()
