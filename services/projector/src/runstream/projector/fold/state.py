"""What a batch fold works on: the current rows it needs, and the changes it makes.

The reducers (`session`, `message`, `chart`) read and change rows here, never the
database: `keys_of` says which rows a batch needs, a loader fills a `State` with them
(Postgres in `writer.load`, a dict in tests), the reducers fold every event of the batch
in stream order, and a writer applies the result (`writer.write`).

Rows are plain dicts keyed by column name. A table keeps the final image of each row
the batch touched (last writer wins per row), so the writer sends one row per key
whatever the number of events that changed it. Append-only tables (logs, charts,
datasets, dead letters, poison rows) keep the first row per unique key, as
`INSERT … ON CONFLICT DO NOTHING` one event at a time would.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from runstream.contracts import (
    AnalysisRequested,
    AnalysisSettled,
    ChartEvent,
    ChartRequested,
    Event,
    MessageEvent,
)

Row = dict[str, Any]


class Table:
    """The loaded rows of one table (None: the row does not exist) and which changed."""

    def __init__(self, rows: dict[Any, Row | None] | None = None) -> None:
        self.rows: dict[Any, Row | None] = dict(rows or {})
        self.dirty: set[Any] = set()

    def get(self, key: Hashable) -> Row | None:
        """The row as it stands at this point of the batch (the key must be loaded)."""
        return self.rows[key]

    def put(self, key: Hashable, row: Row) -> Row:
        self.rows[key] = row
        self.dirty.add(key)
        return row

    def change(self, key: Hashable, **values: Any) -> None:
        row = self.rows[key]
        assert row is not None, f"change of a missing row {key!r}"
        row.update(values)
        self.dirty.add(key)

    def changed(self) -> Iterator[tuple[Any, Row]]:
        for key in self.dirty:
            row = self.rows[key]
            if row is not None:
                yield key, row


class Appends:
    """Rows of an append-only table: the first per unique key wins."""

    def __init__(self, *unique: str) -> None:
        self.unique = unique  # each a column holding a unique key
        self.rows: list[Row] = []
        self._seen: set[tuple[str, Any]] = set()

    def add(self, row: Row) -> None:
        keys = [(col, row[col]) for col in self.unique]
        if any(key in self._seen for key in keys):
            return
        self._seen.update(keys)
        self.rows.append(row)


@dataclass
class Positions:
    """Per row, the furthest (seq, at) the batch's events reached (see fold._positions)."""

    sessions: dict[str, tuple[int, datetime]] = field(default_factory=dict)
    messages: dict[str, int] = field(default_factory=dict)
    tasks: dict[str, tuple[int, datetime]] = field(default_factory=dict)


@dataclass
class State:
    """The rows one batch reads and writes. Built by a loader from `keys_of(events)`."""

    sessions: Table = field(default_factory=Table)
    messages: Table = field(default_factory=Table)
    steps: Table = field(default_factory=Table)  # key (message_id, step)
    durations: Table = field(default_factory=Table)  # key step
    tasks: Table = field(default_factory=Table)
    # session_id -> the lock row after the batch (None: no lock). Written whole.
    locks: dict[str, Row | None] = field(default_factory=dict)
    # message_id -> names of its steps (loaded with the message's steps, kept current)
    steps_of: dict[str, list[str]] = field(default_factory=dict)
    datasets: Appends = field(default_factory=lambda: Appends("dataset_id"))
    logs: Appends = field(default_factory=lambda: Appends("event_id"))
    charts: Appends = field(default_factory=lambda: Appends("chart_id"))
    dead_letters: Appends = field(default_factory=lambda: Appends("seq"))
    poison: Appends = field(default_factory=lambda: Appends("seq"))
    positions: Positions = field(default_factory=Positions)
    # The partition whose running step means `durations` holds (0: unpartitioned).
    part: int = 0

    def step_names(self, message_id: str) -> list[str]:
        return self.steps_of.setdefault(message_id, [])


@dataclass(frozen=True)
class Keys:
    """The rows a batch needs before it can fold: everything its events name."""

    sessions: frozenset[str]
    messages: frozenset[str]
    tasks: frozenset[str]


def keys_of(events: Iterable[Event]) -> Keys:
    sessions: set[str] = set()
    messages: set[str] = set()
    tasks: set[str] = set()
    for event in events:
        sessions.add(event.session_id)
        if isinstance(event, MessageEvent | AnalysisSettled | ChartRequested):
            messages.add(event.message_id)
        if isinstance(event, AnalysisRequested):
            messages.update((event.message_id, event.user_message_id))
        if isinstance(event, ChartEvent):
            tasks.add(event.task_id)
    return Keys(frozenset(sessions), frozenset(messages), frozenset(tasks))


def aware(at: datetime) -> datetime:
    """Event times compare with stored ones: a time without a zone is taken as UTC."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def later(current: datetime | None, at: datetime) -> datetime:
    """SQL `greatest(current, at)`: NULL is ignored."""
    return at if current is None or at > current else current
