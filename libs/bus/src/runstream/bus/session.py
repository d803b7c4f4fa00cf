"""The session aggregate: every write to `<prefix>.<sid>.session` goes through here.

Read the last message on that exact subject (direct get), decide the next event from
it (each session event carries the full lock state after it), publish it with
`Nats-Expected-Last-Subject-Sequence` = the sequence read (0 when empty), and on a
wrong-last-sequence answer read again and decide again. Any number of processes may
race on one session: JetStream orders them, exactly one wins each round.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from datetime import datetime, timedelta

import msgspec
import structlog
from nats.js.errors import APIError

from runstream.bus.bus import Bus, Published
from runstream.bus.errors import ConcurrencyConflict, LockHeld, NotLockHolder, SessionNotFound
from runstream.contracts import (
    AnalysisRequested,
    AnalysisSettled,
    Column,
    DatasetAttached,
    DeadLetter,
    ErrorInfo,
    Lock,
    LockRenewed,
    SessionCreated,
    SessionEvent,
    SessionRead,
    SessionRenamed,
    SettledStatus,
    decode,
    derived_id,
    new_id,
    utcnow,
)

logger = structlog.get_logger()

WRONG_LAST_SEQUENCE = 10071  # JSStreamWrongLastSequenceErrF


class SessionState(msgspec.Struct, frozen=True):
    """What the last event on the session subject says: its sequence, and itself."""

    seq: int
    event: SessionEvent | None

    @property
    def exists(self) -> bool:
        return self.event is not None

    @property
    def lock(self) -> Lock | None:
        return self.event.lock if self.event is not None else None

    def active_lock(self, now: datetime) -> Lock | None:
        lock = self.lock
        return lock if lock is not None and lock.held_at(now) else None


class Committed(msgspec.Struct, frozen=True):
    seq: int
    event: SessionEvent
    duplicate: bool = False


Decide = Callable[[SessionState], SessionEvent | None]


class SessionAggregate:
    def __init__(self, bus: Bus, *, lock_ttl_s: float | None = None, max_rounds: int = 64):
        self.bus = bus
        self.lock_ttl = timedelta(seconds=lock_ttl_s or bus.settings.lock_ttl_s)
        self.max_rounds = max_rounds

    async def load(self, session_id: str) -> SessionState:
        raw = await self.bus.get_last_for_subject(self.bus.subjects.session(session_id))
        if raw is None:
            return SessionState(seq=0, event=None)
        event = decode(raw.data or b"")
        if not isinstance(event, SessionEvent):  # pragma: no cover - subject holds session events
            raise SessionNotFound(f"unexpected {type(event).__name__} on session subject")
        return SessionState(seq=int(raw.seq or 0), event=event)

    async def update(self, session_id: str, decide: Decide) -> Committed | None:
        """Decide the next event from the current state and publish it, conditionally.

        `decide` may raise a domain error (e.g. LockHeld) or return None for "no change".
        """
        for round_ in range(self.max_rounds):
            state = await self.load(session_id)
            event = decide(state)
            if event is None:
                return None
            try:
                pub: Published = await self.bus.publish(
                    event, expected_last_subject_seq=state.seq
                )
            except APIError as exc:
                if exc.err_code != WRONG_LAST_SEQUENCE:
                    raise
                # Someone else wrote first: read again. A little jitter spreads a herd.
                if round_ > 2:
                    await asyncio.sleep(random.uniform(0, 0.002 * round_))
                continue
            return Committed(seq=pub.seq, event=event, duplicate=pub.duplicate)
        raise ConcurrencyConflict(f"session {session_id} kept changing; gave up")

    # --- the operations ---------------------------------------------------------------
    async def create(self, session_id: str, *, owner: str, title: str = "") -> Committed:
        def decide(state: SessionState) -> SessionEvent | None:
            if state.exists:
                return None
            return SessionCreated(
                event_id=new_id(), at=utcnow(), session_id=session_id, owner=owner, title=title
            )

        committed = await self.update(session_id, decide)
        if committed is None:
            raise ConcurrencyConflict(f"session {session_id} already exists")
        return committed

    async def request_analysis(
        self,
        session_id: str,
        *,
        owner: str,
        question: str,
        message_id: str,
        user_message_id: str,
        dataset_id: str | None = None,
        retry_of: str | None = None,
    ) -> Committed:
        """Take the lock and record the question in one conditional write.

        Raises LockHeld (naming the holder) while another analysis holds an unexpired lock.
        """

        def decide(state: SessionState) -> SessionEvent | None:
            if not state.exists:
                raise SessionNotFound(f"session {session_id} does not exist")
            now = utcnow()
            held = state.active_lock(now)
            if held is not None:
                raise LockHeld(held.message_id)
            lock = Lock(message_id=message_id, acquired_at=now, expires_at=now + self.lock_ttl)
            return AnalysisRequested(
                event_id=new_id(), at=now, session_id=session_id, lock=lock,
                message_id=message_id, user_message_id=user_message_id, owner=owner,
                question=question, dataset_id=dataset_id, retry_of=retry_of,
            )

        committed = await self.update(session_id, decide)
        assert committed is not None
        return committed

    async def renew(self, session_id: str, message_id: str, *, stage: str = "") -> Committed:
        """Extend this message's lock. Raises NotLockHolder when another message holds it."""

        def decide(state: SessionState) -> SessionEvent | None:
            now = utcnow()
            lock = state.lock
            if lock is None or lock.message_id != message_id:
                raise NotLockHolder(message_id, lock.message_id if lock else None)
            renewed = Lock(
                message_id=message_id, acquired_at=lock.acquired_at, expires_at=now + self.lock_ttl
            )
            return LockRenewed(
                event_id=new_id(), at=now, session_id=session_id, lock=renewed,
                message_id=message_id, stage=stage,
            )

        committed = await self.update(session_id, decide)
        assert committed is not None
        return committed

    async def settle(
        self,
        session_id: str,
        message_id: str,
        status: SettledStatus,
        *,
        summary: str | None = None,
        error: ErrorInfo | None = None,
        dead_letter: DeadLetter | None = None,
    ) -> Committed:
        """The one terminal event of an analysis; frees the lock only if this message holds it.

        Its Nats-Msg-Id is derived from the message, so racing settles of one message
        inside the duplicate window are stored once.
        """

        def decide(state: SessionState) -> SessionEvent | None:
            lock = state.lock
            if lock is not None and lock.message_id == message_id:
                lock = None
            return AnalysisSettled(
                event_id=derived_id(message_id, "analysis_settled"), at=utcnow(),
                session_id=session_id, lock=lock, message_id=message_id, status=status,
                summary=summary, error=error, dead_letter=dead_letter,
            )

        committed = await self.update(session_id, decide)
        assert committed is not None
        return committed

    async def attach_dataset(
        self,
        session_id: str,
        *,
        dataset_id: str,
        name: str,
        fmt: str,
        object_name: str,
        size_bytes: int,
        row_count: int,
        columns: list[Column],
        sample_rows: list[list[object]],
    ) -> Committed:
        def decide(state: SessionState) -> SessionEvent | None:
            if not state.exists:
                raise SessionNotFound(f"session {session_id} does not exist")
            return DatasetAttached(
                event_id=new_id(), at=utcnow(), session_id=session_id, lock=state.lock,
                dataset_id=dataset_id, name=name, format=fmt, object_name=object_name,
                size_bytes=size_bytes, row_count=row_count, columns=columns,
                sample_rows=sample_rows,
            )

        committed = await self.update(session_id, decide)
        assert committed is not None
        return committed

    async def rename(self, session_id: str, *, owner: str, title: str) -> Committed:
        def decide(state: SessionState) -> SessionEvent | None:
            if not state.exists:
                raise SessionNotFound(f"session {session_id} does not exist")
            return SessionRenamed(
                event_id=new_id(), at=utcnow(), session_id=session_id, lock=state.lock,
                owner=owner, title=title,
            )

        committed = await self.update(session_id, decide)
        assert committed is not None
        return committed

    async def mark_read(self, session_id: str, *, owner: str) -> Committed:
        def decide(state: SessionState) -> SessionEvent | None:
            if not state.exists:
                raise SessionNotFound(f"session {session_id} does not exist")
            return SessionRead(
                event_id=new_id(), at=utcnow(), session_id=session_id, lock=state.lock,
                owner=owner,
            )

        committed = await self.update(session_id, decide)
        assert committed is not None
        return committed
