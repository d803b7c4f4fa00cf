"""Subject names: build them from validated ids, and parse them back."""

from __future__ import annotations

from typing import Literal

import msgspec

from runstream.contracts.errors import InvalidSubject
from runstream.contracts.ids import is_valid_id, validate_id

DEFAULT_PREFIX = "rs"
STREAM_NAME = "RUNSTREAM"

Aggregate = Literal["session", "msg", "chart"]


class SubjectParts(msgspec.Struct, frozen=True, kw_only=True):
    session_id: str
    aggregate: Aggregate
    entity_id: str | None = None  # message id or chart task id
    event_type: str | None = None


class Subjects:
    """Subject builder for one prefix (e.g. `rs`)."""

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        if not prefix or any(not is_valid_id(tok) for tok in prefix.split(".")):
            raise InvalidSubject(f"invalid subject prefix {prefix!r}")
        self.prefix = prefix
        self._depth = prefix.count(".") + 1

    # --- builders ---------------------------------------------------------------------
    @property
    def all(self) -> str:
        return f"{self.prefix}.>"

    @property
    def all_sessions(self) -> str:
        return f"{self.prefix}.*.session"

    def session(self, session_id: str) -> str:
        return f"{self.prefix}.{validate_id(session_id, field='session_id')}.session"

    def session_all(self, session_id: str) -> str:
        return f"{self.prefix}.{validate_id(session_id, field='session_id')}.>"

    def message(self, session_id: str, message_id: str, event_type: str) -> str:
        sid = validate_id(session_id, field="session_id")
        mid = validate_id(message_id, field="message_id")
        return f"{self.prefix}.{sid}.msg.{mid}.{validate_id(event_type, field='type')}"

    def message_all(self, message_id: str, session_id: str = "*") -> str:
        sid = session_id if session_id == "*" else validate_id(session_id, field="session_id")
        return f"{self.prefix}.{sid}.msg.{validate_id(message_id, field='message_id')}.>"

    def message_type(self, event_type: str) -> str:
        """Every message event of one type, in every session (a worker's filter)."""
        return f"{self.prefix}.*.msg.*.{validate_id(event_type, field='type')}"

    def chart(self, session_id: str, task_id: str, event_type: str) -> str:
        sid = validate_id(session_id, field="session_id")
        tid = validate_id(task_id, field="task_id")
        return f"{self.prefix}.{sid}.chart.{tid}.{validate_id(event_type, field='type')}"

    def chart_all(self, task_id: str, session_id: str = "*") -> str:
        sid = session_id if session_id == "*" else validate_id(session_id, field="session_id")
        return f"{self.prefix}.{sid}.chart.{validate_id(task_id, field='task_id')}.>"

    def chart_type(self, event_type: str) -> str:
        return f"{self.prefix}.*.chart.*.{validate_id(event_type, field='type')}"

    def for_event(self, event: object) -> str:
        """The subject an event belongs on, from its own fields."""
        from runstream.contracts.chart import ChartEvent
        from runstream.contracts.codec import type_of
        from runstream.contracts.message import MessageEvent
        from runstream.contracts.session import SessionEvent

        if isinstance(event, SessionEvent):
            return self.session(event.session_id)
        if isinstance(event, MessageEvent):
            return self.message(event.session_id, event.message_id, type_of(event))
        if isinstance(event, ChartEvent):
            return self.chart(event.session_id, event.task_id, type_of(event))
        raise InvalidSubject(f"no subject for {type(event).__name__}")

    # --- parser -----------------------------------------------------------------------
    def parse(self, subject: str) -> SubjectParts:
        tokens = subject.split(".")
        if ".".join(tokens[: self._depth]) != self.prefix:
            raise InvalidSubject(f"subject {subject!r} is not under {self.prefix!r}")
        rest = tokens[self._depth :]
        match rest:
            case [sid, "session"]:
                return SubjectParts(session_id=sid, aggregate="session")
            case [sid, "msg", mid, etype]:
                return SubjectParts(
                    session_id=sid, aggregate="msg", entity_id=mid, event_type=etype
                )
            case [sid, "chart", tid, etype]:
                return SubjectParts(
                    session_id=sid, aggregate="chart", entity_id=tid, event_type=etype
                )
            case _:
                raise InvalidSubject(f"unrecognised subject {subject!r}")


_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193


def partition_of(session_id: str, partitions: int) -> int:
    """The partition of a session when the stream is folded in `partitions` partitions:
    what NATS's subject transform `{{partition(P,1)}}` computes (FNV-1a of the session id,
    modulo P), so readers know which partition's position a session's reads wait on."""
    digest = _FNV_OFFSET
    for byte in session_id.encode():
        digest = ((digest ^ byte) * _FNV_PRIME) & 0xFFFFFFFF
    return digest % partitions
