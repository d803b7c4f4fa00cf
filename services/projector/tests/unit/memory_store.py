"""The read models as dicts, with the writer's semantics, for the reducers' pure tests.

`MemoryStore.fold(items)` runs a batch the way `projector.fold_batch` does (decode, load
the rows the batch names, fold in order, write), against dicts instead of Postgres:
upserts replace whole rows (a `lazy` column keeps its value when the batch left it
unset), append-only rows are inserted unless one of their unique keys exists.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from runstream.projector.fold import Batch, Keys, Row, State

_UNIQUE = {
    "datasets": (("dataset_id",),),
    "message_logs": (("message_id", "seq"), ("event_id",)),
    "charts": (("chart_id",),),
    "dead_letters": (("seq",),),
    "poison_events": (("seq",),),
}


class MemoryStore:
    def __init__(self) -> None:
        self.sessions: dict[Any, Row] = {}
        self.messages: dict[Any, Row] = {}
        self.steps: dict[Any, Row] = {}
        self.durations: dict[Any, Row] = {}
        self.tasks: dict[Any, Row] = {}
        self.locks: dict[Any, Row] = {}
        self.appends: dict[str, list[Row]] = {name: [] for name in _UNIQUE}

    def load(self, keys: Keys) -> State:
        state = State()
        for table, source, wanted in (
            (state.sessions, self.sessions, keys.sessions),
            (state.messages, self.messages, keys.messages),
            (state.tasks, self.tasks, keys.tasks),
        ):
            for key in wanted:
                row = source.get(key)
                loaded = None if row is None else copy.deepcopy(row)
                if loaded is not None and source is self.messages:
                    loaded.pop("result")  # lazy: never loaded
                table.rows[key] = loaded
        for (mid, step), row in sorted(self.steps.items()):
            if mid in keys.messages:
                state.steps.rows[(mid, step)] = copy.deepcopy(row)
                state.step_names(mid).append(step)
        if keys.messages:
            state.durations.rows.update(copy.deepcopy(self.durations))
        return state

    def write(self, state: State) -> None:
        for target, table in (
            (self.sessions, state.sessions), (self.steps, state.steps),
            (self.durations, state.durations), (self.tasks, state.tasks),
        ):  # fmt: skip
            for key, row in table.changed():
                target[key] = copy.deepcopy(row)
        for key, row in state.messages.changed():
            new = copy.deepcopy(row)
            if new.get("result") is None:
                new["result"] = self.messages.get(key, {}).get("result")
            self.messages[key] = new
        for sid, lock in state.locks.items():
            if lock is None:
                self.locks.pop(sid, None)
            else:
                self.locks[sid] = dict(lock)
        for name, appends in (
            ("datasets", state.datasets), ("message_logs", state.logs),
            ("charts", state.charts), ("dead_letters", state.dead_letters),
            ("poison_events", state.poison),
        ):  # fmt: skip
            rows = self.appends[name]
            for row in appends.rows:
                if not any(
                    all(old[c] == row[c] for c in cols) for old in rows for cols in _UNIQUE[name]
                ):
                    rows.append(dict(row))

    def fold(self, items: Iterable[tuple[int, str, bytes]]) -> None:
        batch = Batch(items)
        self.write(batch.fold_into(self.load(batch.keys)))

    def dump(self) -> dict[str, Any]:
        return {
            "sessions": self.sessions, "messages": self.messages, "steps": self.steps,
            "durations": self.durations, "tasks": self.tasks, "locks": self.locks,
            **{name: sorted(rows, key=repr) for name, rows in self.appends.items()},
        }  # fmt: skip
