"""Live fan-out: one core NATS subscription per gateway process, feeding every client.

The stream republishes each stored message on `live.<prefix>.>` with its stream
sequence, so the hub knows every frame's position. A client opening a stream:

1. registers (from then on, every frame with seq > `position` lands in its queue);
2. is replayed (after_seq, position] from JetStream (direct gets, filtered by subject);
3. then reads its queue. No gap and no duplicate, on any replica.

Once a client is live (its replay sent, its queue empty), an SSE client served by
uvicorn's HTTP/1.1 protocol hands the hub a `Sink`: its connection's transport. From then
on the hub writes each frame's chunk, encoded once for every client, straight into that
transport while it dispatches: no queue, no task wake-up, no ASGI message per client and
frame (docs/streams.md, "Fan-out"). Other clients (WebSocket, other servers) read a queue.

A client that falls behind (`client_buffer` frames queued, or `client_buffer_bytes` unsent
in its transport) is dropped with a final `reset`, rather than holding memory. A gap in the
live feed (a lost core message) is healed from JetStream before dispatching on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec
import structlog
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from runstream.bus import Bus
from runstream.contracts import (
    MESSAGE_END_TYPE,
    TASK_END_TYPES,
    InvalidSubject,
    SubjectParts,
    Subjects,
)
from runstream.gateway.errors import unavailable_dependency
from runstream.telemetry import SSE_CLIENTS

logger = structlog.get_logger()


class _Ids(msgspec.Struct):
    """The few fields routing needs, decoded without building the whole event."""

    type: str
    message_id: str | None = None
    owner: str | None = None


_ids = msgspec.json.Decoder(_Ids)


@dataclass(slots=True)
class Frame:
    seq: int
    type: str
    data: bytes
    parts: SubjectParts
    message_id: str | None
    _sse: bytes | None = None
    _chunk: bytes | None = None
    _ws: str | None = None

    def sse(self) -> bytes:
        """The SSE bytes of this frame, encoded once and shared by every client."""
        if self._sse is None:
            self._sse = b"id: %d\nevent: %s\ndata: %s\n\n" % (
                self.seq, self.type.encode(), self.data)
        return self._sse

    def sse_chunk(self) -> bytes:
        """The same bytes as one HTTP/1.1 chunk (`Transfer-Encoding: chunked`)."""
        if self._chunk is None:
            sse = self.sse()
            self._chunk = b"%x\r\n%s\r\n" % (len(sse), sse)
        return self._chunk

    def ws(self) -> str:
        if self._ws is None:
            self._ws = f'{{"seq":{self.seq},"type":"{self.type}","data":{self.data.decode()}}}'
        return self._ws


@dataclass(frozen=True, slots=True)
class Scope:
    """What one client wants to see."""

    kind: str  # "session" | "message" | "chart" | "owner"
    session_id: str | None = None
    message_id: str | None = None
    task_id: str | None = None
    owner: str | None = None

    def replay_subject(self, subjects: Subjects) -> str:
        if self.kind == "chart":
            return subjects.chart_all(str(self.task_id), str(self.session_id))
        if self.kind == "owner":
            return subjects.all_sessions
        return subjects.session_all(str(self.session_id))

    def wants(self, frame: Frame, sessions: set[str] | frozenset[str] = frozenset()) -> bool:
        p = frame.parts
        if self.kind == "session":
            return p.session_id == self.session_id
        if self.kind == "message":
            return p.session_id == self.session_id and frame.message_id == self.message_id
        if self.kind == "chart":
            return p.aggregate == "chart" and p.entity_id == self.task_id
        if self.kind == "owner":
            return (
                p.aggregate == "session"
                and frame.type in OWNER_EVENT_TYPES
                and p.session_id in sessions
            )
        return False

    def ends(self, frame: Frame) -> bool:
        """A message's stream ends after it settles; a chart task's when the task does."""
        if self.kind == "message":
            return frame.type == MESSAGE_END_TYPE
        if self.kind == "chart":
            return frame.type in TASK_END_TYPES
        return False


OWNER_EVENT_TYPES = frozenset(
    {"session_created", "analysis_requested", "analysis_settled", "session_read",
     "session_renamed"}
)


class Sink(Protocol):
    """Where a live client's frames are written directly (a started response's transport)."""

    def send(self, frame: Frame) -> bool:
        """Write the frame; False when the client is gone or too far behind."""
        ...

    def gone(self) -> bool: ...


@dataclass(eq=False, slots=True)
class Client:
    scope: Scope
    queue: asyncio.Queue[Frame | None]
    dropped: bool = False
    reason: str = ""  # why it was dropped: "client_too_slow" | "shutdown"
    last_seq: int = 0
    sessions: set[str] = field(default_factory=set)  # owner scope: the owner's sessions
    # per session, the position the client's snapshot already shows (owner feed)
    reflected: Mapping[str, int] | None = None
    # live and written directly: `done` is set when the stream has to stop (its terminal
    # frame written, dropped, gone); until then the stream's task only sends heartbeats
    sink: Sink | None = None
    done: asyncio.Event | None = None
    finished: bool = False
    gone: bool = False

    def go_direct(self, sink: Sink) -> asyncio.Event:
        """From now on the hub writes to `sink`. Call only with an empty queue and no
        await since checking it: no frame can then be missed or sent twice."""
        self.done = asyncio.Event()
        self.sink = sink
        return self.done


class Hub:
    def __init__(self, bus: Bus, *, client_buffer: int = 1024) -> None:
        self.bus = bus
        self.client_buffer = client_buffer
        self.position = 0
        self._by_session: dict[str, set[Client]] = {}
        self._by_owner: dict[str, set[Client]] = {}
        self._owner_by_session: dict[str, set[Client]] = {}
        self._sid_index = bus.subjects.prefix.count(".") + 1
        self._sub: Any = None
        self._heal_lock = asyncio.Lock()
        self._resync: asyncio.Task[None] | None = None
        self._resync_wanted = False
        self._started = time.monotonic()
        self.frames_seen = 0
        self.clients = 0
        self._first_seq = (0, -1.0)  # (value, monotonic time read)

    # --- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        self.position = await self.bus.last_seq()
        self._sub = await self.bus.nc.subscribe(
            self.bus.live_subject, cb=self._on_live, pending_msgs_limit=1_000_000,
            pending_bytes_limit=512 * 1024 * 1024,
        )
        self.bus.on_reconnect(self._after_reconnect)

    async def stop(self) -> None:
        sub, self._sub = self._sub, None
        if self._resync is not None:
            self._resync.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._resync
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        for group in (*self._by_session.values(), *self._by_owner.values()):  # end every stream
            for client in list(group):
                self._drop(client, "shutdown")

    # --- the live feed ----------------------------------------------------------------
    async def _on_live(self, msg: Msg) -> None:
        headers = msg.headers or {}
        try:
            seq = int(headers["Nats-Sequence"])
            last = int(headers.get("Nats-Last-Sequence", "0"))
        except (KeyError, ValueError):
            return
        if seq <= self.position:
            return  # already dispatched (healed earlier)
        if last > self.position:
            await self._heal(last)
        subject = headers.get("Nats-Subject") or msg.subject.removeprefix("live.")
        self._dispatch(seq, subject, msg.data)

    def _after_reconnect(self) -> None:
        """The client renewed the subscription, but live messages sent while it was away
        are lost: fetch them from JetStream now rather than at the next live message
        (which may be long in coming), so open streams see them at once and in order."""
        self._resync_wanted = True
        if self._sub is not None and (self._resync is None or self._resync.done()):
            self._resync = asyncio.get_running_loop().create_task(self._catch_up())

    async def _catch_up(self) -> None:
        delay = 0.2
        while self._resync_wanted and self._sub is not None:
            self._resync_wanted = False
            try:
                await self._heal(await self.bus.last_seq())
            except Exception as exc:
                if unavailable_dependency(exc) is None:
                    logger.exception("fanout.catch_up_failed")
                    return
                self._resync_wanted = True  # JetStream is not back yet: again, later
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        logger.info("fanout.caught_up", position=self.position)

    async def _heal(self, upto: int) -> None:
        """Fetch (position, upto] from JetStream after a lost live message."""
        async with self._heal_lock:
            seq = self.position + 1
            while seq <= upto:
                try:
                    raw = await self.bus.get_msg(seq)
                except NotFoundError:
                    seq += 1
                    continue
                self._dispatch(int(raw.seq or seq), raw.subject or "", raw.data or b"")
                seq += 1
            self.position = max(self.position, upto)

    def frame(self, seq: int, subject: str, data: bytes) -> Frame | None:
        try:
            parts = self.bus.subjects.parse(subject)
            ids = _ids.decode(data)
        except (InvalidSubject, msgspec.DecodeError):
            return None
        return Frame(seq=seq, type=ids.type, data=data, parts=parts, message_id=ids.message_id)

    def _dispatch(self, seq: int, subject: str, data: bytes) -> None:
        self.position = max(self.position, seq)
        self.frames_seen += 1
        sid = subject.split(".")[self._sid_index] if subject.count(".") >= self._sid_index else ""
        targets = self._by_session.get(sid)
        owner_targets = self._owner_by_session.get(sid) if subject.endswith(".session") else None
        new_session = self._by_owner and subject.endswith(".session")
        if not targets and not owner_targets and not new_session:
            return
        frame = self.frame(seq, subject, data)
        if frame is None:
            return
        for client in list(targets or ()):
            if client.scope.wants(frame):
                self._offer(client, frame)
        if frame.type not in OWNER_EVENT_TYPES:
            return
        for client in list(owner_targets or ()):
            self._offer(client, frame)
        if frame.type == "session_created":
            owner = _ids.decode(data).owner
            for client in list(self._by_owner.get(owner or "", ())):
                self._owner_by_session.setdefault(sid, set()).add(client)
                client.sessions.add(sid)
                self._offer(client, frame)

    def _offer(self, client: Client, frame: Frame) -> None:
        if client.dropped or frame.seq <= client.last_seq:
            return
        if client.reflected and frame.seq <= client.reflected.get(frame.parts.session_id, 0):
            return  # the client's snapshot shows it already
        client.last_seq = frame.seq
        sink = client.sink
        if sink is None:
            try:
                client.queue.put_nowait(frame)
            except asyncio.QueueFull:
                self._drop(client)
        elif not sink.send(frame):
            client.gone = sink.gone()
            self._drop(client)
        elif client.scope.ends(frame):
            client.finished = True
            self._stop_direct(client)

    def _stop_direct(self, client: Client) -> None:
        client.sink = None
        if client.done is not None:
            client.done.set()

    def _drop(self, client: Client, reason: str = "client_too_slow") -> None:
        client.dropped = True
        client.reason = reason
        if client.sink is not None:
            self._stop_direct(client)
            return
        with contextlib.suppress(asyncio.QueueFull):
            client.queue.put_nowait(None)
        if client.queue.full():  # make room for the end marker: the client is gone anyway
            with contextlib.suppress(asyncio.QueueEmpty):
                client.queue.get_nowait()
            client.queue.put_nowait(None)

    # --- clients ----------------------------------------------------------------------
    def register(
        self, scope: Scope, owner_sessions: set[str] | None = None,
        reflected: Mapping[str, int] | None = None,
    ) -> tuple[Client, int]:
        client = Client(scope=scope, queue=asyncio.Queue(self.client_buffer),
                        reflected=reflected)
        if scope.kind == "owner":
            client.sessions = set(owner_sessions or ())
            self._by_owner.setdefault(scope.owner or "", set()).add(client)
            for sid in client.sessions:
                self._owner_by_session.setdefault(sid, set()).add(client)
        else:
            self._by_session.setdefault(scope.session_id or "", set()).add(client)
        self.clients += 1
        SSE_CLIENTS.inc()
        return client, self.position

    def unregister(self, client: Client) -> None:
        if client.scope.kind == "owner":
            _discard(self._by_owner, client.scope.owner or "", client)
            for sid in client.sessions:
                _discard(self._owner_by_session, sid, client)
        else:
            _discard(self._by_session, client.scope.session_id or "", client)
        self.clients -= 1
        SSE_CLIENTS.dec()

    async def replay(
        self, scope: Scope, after_seq: int, upto: int, sessions: set[str] | None = None
    ) -> AsyncIterator[Frame]:
        """Frames of one scope in (after_seq, upto], oldest first, from JetStream."""
        subject = scope.replay_subject(self.bus.subjects)
        seq = after_seq + 1
        while seq <= upto:
            try:
                raw = await self.bus.js.get_msg(
                    self.bus.stream, seq=seq, subject=subject, direct=True, next=True
                )
            except NotFoundError:
                return
            found = int(raw.seq or 0)
            if found == 0 or found > upto:
                return
            frame = self.frame(found, raw.subject or "", raw.data or b"")
            if frame is not None and scope.wants(frame, sessions or frozenset()):
                yield frame
            seq = found + 1

    async def first_seq(self, max_age_s: float = 1.0) -> int:
        """The oldest retained sequence, read from JetStream at most once a second."""
        value, read_at = self._first_seq
        now = time.monotonic()
        if now - read_at > max_age_s:
            value = await self.bus.first_seq()
            self._first_seq = (value, now)
        return value

    def direct_clients(self) -> int:
        """Live clients the hub writes to directly (counted on demand, off the hot path)."""
        groups = (*self._by_session.values(), *self._by_owner.values())
        return sum(client.sink is not None for group in groups for client in group)

    def events_per_second(self) -> float:
        elapsed = max(1e-6, time.monotonic() - self._started)
        return self.frames_seen / elapsed


def _discard(index: dict[str, set[Client]], key: str, client: Client) -> None:
    group = index.get(key)
    if group is not None:
        group.discard(client)
        if not group:
            index.pop(key, None)
