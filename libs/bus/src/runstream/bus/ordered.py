"""Read a stream in stream order from a position of the caller's choosing.

The reader is how the projector (and rebuild) see the stream: it can never hand out
sequence N+1 before N. It pulls through an ephemeral, ack-less consumer that starts at
`position + 1`; JetStream numbers the deliveries of such a consumer 1, 2, 3, ... so a
jump in that *consumer* sequence means a delivery was lost on the way (a pull that
expired, a reconnect). The reader then throws the consumer away and starts a new one
at its position + 1: nothing after a lost delivery is ever returned.

If the consumer itself disappears (a NATS restart drops in-memory consumers; a deleted
stream takes its consumers along), the reader raises ReaderLost: only the caller can
tell whether the stream is still the one its position counts in. The same goes for a
consumer no server answers for any more: it has one replica, in memory, and in a
cluster that replica lives on one node; when that node dies the consumer is not
reported gone, it just stops (pulls refused, info unanswered) until the node returns.
After `lost_after_s` of that the reader gives it up too, and a new consumer, placed on a
live node, carries on from the position.

A jump in the *stream* sequence with consecutive consumer sequences is not a loss: the
messages in between no longer exist (deleted, or aged out) or are outside the filter.
The caller learns about it through `skipped` and decides whether to alert.

Nothing is acknowledged: the caller's own store holds the position (the projector's
checkpoint commits with its rows), so after any failure it starts a new reader there.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import secrets
import time
from typing import Any, NamedTuple

import msgspec
import nats.errors
import nats.js.errors
import structlog
from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

logger = structlog.get_logger()

Item = tuple[int, str, bytes]  # (stream seq, subject, raw data): what a fold needs


class Entry(NamedTuple):
    """One stored message, read in order: an Item plus its headers (trace context)."""

    seq: int
    subject: str
    data: bytes
    headers: dict[str, str] | None = None

_FETCH_ERRORS = (
    TimeoutError,
    nats.errors.TimeoutError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
)


def _client(js: JetStreamContext) -> Any:
    """The NATS connection under a JetStream context (nats-py keeps it unexposed)."""
    return js._nc


def _pending(msg: Any) -> int:
    """Messages left in the stream after this delivery, when it was sent."""
    return int(msg.metadata.num_pending or 0)


class ReaderLost(Exception):
    """The reader's consumer is gone (NATS restarted, the stream was deleted or replaced).

    The caller decides where to start again, after checking it is still the same stream.
    """


class StreamIdentity(msgspec.Struct, frozen=True):
    """What tells one stream from another of the same name: its creation time."""

    name: str
    created: str  # RFC 3339, as the server reports it; stable for the stream's life
    first_seq: int
    last_seq: int


async def stream_identity(js: JetStreamContext, stream: str) -> StreamIdentity:
    info = await js.stream_info(stream)
    created = info.created.isoformat() if info.created is not None else ""
    return StreamIdentity(
        name=stream, created=created,
        first_seq=int(info.state.first_seq), last_seq=int(info.state.last_seq),
    )


class OrderedReader:
    """Batches of Entry (seq, subject, data, headers) in stream order after `position`."""

    def __init__(
        self,
        js: JetStreamContext,
        stream: str,
        subject: str,
        *,
        batch: int = 500,
        fetch_timeout_s: float = 1.0,
        name_prefix: str = "reader",
        lost_after_s: float = 2.0,
    ) -> None:
        self.js = js
        self.stream = stream
        self.subject = subject
        self.batch = batch
        self.fetch_timeout_s = fetch_timeout_s
        self.name_prefix = name_prefix
        self.lost_after_s = lost_after_s
        self.position = 0  # last stream sequence handed out (or the start)
        self.skipped = 0  # stream sequences passed over because they no longer exist
        self.restarts = 0  # consumers replaced after a lost delivery
        # Messages after the position still in the stream when the last one was
        # delivered (its `num_pending`): how far behind the reader is.
        self.behind = 0
        self._consumer_seq = 0  # last consumer sequence received
        self._name: str | None = None
        self._sub: Any = None  # the inbox subscription deliveries arrive on
        self._inbox = ""
        self._buffer: collections.deque[Any] = collections.deque()
        self._arrived = asyncio.Event()
        self._open = 0  # deliveries the one open pull request may still bring
        self._open_until = 0.0  # when it is over at the latest (an answer can be lost)
        self._last_check = 0.0
        self._unanswered_since: float | None = None  # since when no server answers for it
        self.log = logger.bind(stream=stream)

    async def start(self, after: int) -> None:
        """(Re)start reading at stream sequence `after + 1`."""
        await self.close()
        self.position = after
        self._consumer_seq = 0
        self._name = f"{self.name_prefix}_{secrets.token_hex(6)}"
        config = api.ConsumerConfig(
            name=self._name,
            ack_policy=api.AckPolicy.NONE,
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=after + 1,
            filter_subject=self.subject,
            inactive_threshold=120.0,  # gone on its own if this process dies
            mem_storage=True,
            num_replicas=1,
        )
        await self.js.add_consumer(self.stream, config)
        nc = _client(self.js)
        self._inbox = nc.new_inbox()
        self._buffer.clear()
        self._open = 0
        self._sub = await nc.subscribe(self._inbox, cb=self._receive)
        self._last_check = time.monotonic()
        self._unanswered_since = None

    async def next_batch(self, limit: int | None = None) -> list[Entry]:
        """Up to `limit` (default: batch) messages after the position; [] when none came
        within the fetch timeout. Raises on a broken consumer; the caller restarts it."""
        limit = limit or self.batch
        try:
            msgs = await self._fetch(limit)
        except (nats.js.errors.APIError, nats.errors.NoRespondersError, *_FETCH_ERRORS) as exc:
            # The consumer is gone (NATS restarted), its node is down (a cluster), or
            # JetStream is briefly unavailable: look, and give it up if it stays so.
            self.log.info("reader.fetch_refused", error=type(exc).__name__)
            self._unanswered()
            await self._check_idle(force=True)
            return []
        if not msgs:
            await self._check_idle()
            return []
        self._unanswered_since = None
        items: list[Entry] = []
        for msg in msgs:
            meta = msg.metadata
            consumer_seq, seq = int(meta.sequence.consumer), int(meta.sequence.stream)
            if consumer_seq <= self._consumer_seq:
                continue  # a late copy of something already handed out
            if consumer_seq != self._consumer_seq + 1:
                self.log.warning("reader.delivery_lost", position=self.position,
                                 expected=self._consumer_seq + 1, got=consumer_seq)
                await self._restart()
                return items
            self._consumer_seq = consumer_seq
            if seq > self.position + 1:
                self.skipped += seq - self.position - 1
            items.append(Entry(seq, msg.subject, msg.data or b"", msg.headers))
            self.position = seq
            self.behind = int(meta.num_pending or 0)
        return items

    async def pending(self) -> int:
        """Messages after the position that this reader has not been handed yet."""
        assert self._name is not None
        info = await self.js.consumer_info(self.stream, self._name)
        return int(info.num_pending or 0) + max(
            0, int(info.delivered.consumer_seq) - self._consumer_seq)

    async def read_to_end(self) -> list[Entry]:
        """The next batch if anything is left now; [] once the end of the stream is
        reached (for rebuild: "now" is when the call is made)."""
        while self.behind > 0 or await self.pending() > 0:
            if items := await self.next_batch():
                return items
            self.behind = 0  # nothing came: ask the server again
        return []

    async def close(self) -> None:
        sub, name = self._sub, self._name
        self._sub = self._name = None
        self._buffer.clear()
        self._open = 0
        if sub is None or name is None:
            return
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        try:
            await self.js.delete_consumer(self.stream, name)
        except Exception as exc:  # it expires on its own (inactive_threshold)
            self.log.debug("reader.close_failed", error=str(exc))

    async def _restart(self) -> None:
        self.restarts += 1
        await self.start(self.position)

    async def _fetch(self, limit: int) -> list[Any]:
        """Up to `limit` deliveries: wait (up to the fetch timeout) for the first, then
        take what is there once the stream has no more for now, or `limit` arrived.

        One pull request is open at a time, for `limit` messages: `no_wait` while the
        reader is at least that far behind (they are all there: one round trip per
        batch), else lingering up to the fetch timeout so a new message comes at once.
        A request cut short by a caught-up batch stays open and its later deliveries
        wait here for the next call. The deliveries go to a callback into a buffer (no
        task per message, as a library fetch would start)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.fetch_timeout_s
        while True:
            if self._open > 0 and loop.time() > self._open_until:
                self._open = 0  # its end never came (a reconnect lost it): ask again
            buffered = self._buffer
            if buffered and (
                len(buffered) >= limit or self._open <= 0 or _pending(buffered[-1]) == 0
            ):
                break
            if self._open <= 0:
                await self._request(limit, no_wait=self.behind >= limit)
            self._arrived.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                break
        return [self._buffer.popleft() for _ in range(min(limit, len(self._buffer)))]

    async def _request(self, batch: int, *, no_wait: bool) -> None:
        assert self._name is not None
        request: dict[str, Any] = {"batch": batch}
        if no_wait:
            request["no_wait"] = True
        else:
            request["expires"] = int(self.fetch_timeout_s * 1e9)
        prefix = getattr(self.js, "_prefix", "$JS.API")
        await _client(self.js).publish(
            f"{prefix}.CONSUMER.MSG.NEXT.{self.stream}.{self._name}",
            msgspec.json.encode(request), reply=self._inbox,
        )
        self._open = batch
        self._open_until = asyncio.get_running_loop().time() + self.fetch_timeout_s + 1.0

    async def _receive(self, msg: Any) -> None:
        headers = msg.headers
        if headers and headers.get("Status") and not msg.data:
            # 404 nothing (no_wait), 408 expired, 409 consumer or leadership change: the
            # request is over (a 409 for a lost consumer shows in the idle check).
            if headers["Status"] != "100":
                self._open = 0
        else:
            self._buffer.append(msg)
            self._open -= 1
        self._arrived.set()

    def _unanswered(self) -> None:
        """No server answered for the consumer; raise ReaderLost once that has lasted
        `lost_after_s` (its single replica's node is down, or NATS is away that long)."""
        now = time.monotonic()
        if self._unanswered_since is None:
            self._unanswered_since = now
        elif now - self._unanswered_since >= self.lost_after_s:
            self.log.warning("reader.consumer_unreachable", position=self.position,
                             seconds=round(now - self._unanswered_since, 1))
            raise ReaderLost(f"consumer unreachable for {now - self._unanswered_since:.1f}s "
                             f"at position {self.position}")

    async def _check_idle(self, *, force: bool = False) -> None:
        """While idle, make sure the consumer still exists (a NATS restart or a cluster
        fail-over may drop it) and has not delivered something this reader lost."""
        now = time.monotonic()
        if not force and now - self._last_check < 1.0:
            return
        self._last_check = now
        try:
            assert self._name is not None
            # A short timeout: a consumer whose node is down never answers at all.
            info = await self.js.consumer_info(self.stream, self._name,
                                               timeout=max(1.0, self.fetch_timeout_s))
        except NotFoundError as exc:
            self.log.warning("reader.consumer_gone", position=self.position)
            raise ReaderLost(f"consumer gone at position {self.position}") from exc
        except (*_FETCH_ERRORS, nats.errors.NoRespondersError, nats.js.errors.APIError):
            self._unanswered()
            if force:
                await asyncio.sleep(0.2)  # JetStream is away: do not spin on it
            return  # the next fetch or check tries again
        self._unanswered_since = None
        if int(info.delivered.consumer_seq) > self._consumer_seq:
            self.log.warning("reader.delivery_lost", position=self.position,
                             delivered=int(info.delivered.consumer_seq),
                             received=self._consumer_seq)
            await self._restart()
