"""The connection to JetStream: connect, provision the stream, publish, read back."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import nats
import structlog
from nats.aio.client import DEFAULT_PENDING_SIZE
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError
from nats.js.object_store import ObjectStore

from runstream.bus.client import NatsClient
from runstream.bus.errors import EventTooLarge, LogTextTooLarge
from runstream.bus.settings import BusSettings
from runstream.contracts import (
    EVENT_MAX_BYTES,
    LOG_TEXT_MAX_BYTES,
    STREAM_MAX_MSG_BYTES,
    Event,
    LogAppended,
    Subjects,
    encode,
    type_of,
    utf8_size,
)
from runstream.telemetry import EVENTS_PUBLISHED, inject_headers

logger = structlog.get_logger()


class Published(msgspec.Struct, frozen=True):
    seq: int
    duplicate: bool = False


def check_size(event: Event, data: bytes) -> None:
    """Raise EventTooLarge unless `event` (encoded as `data`) is within the contract."""
    if isinstance(event, LogAppended):
        size = utf8_size(event.text)
        if size > LOG_TEXT_MAX_BYTES:
            raise LogTextTooLarge(
                f"log_appended text is {size} bytes; the limit is {LOG_TEXT_MAX_BYTES} "
                "(StepReporter.log truncates to it)",
                size=size,
                limit=LOG_TEXT_MAX_BYTES,
            )
    if len(data) > EVENT_MAX_BYTES:
        raise EventTooLarge(
            f"{type_of(event)} is {len(data)} bytes encoded; the limit is {EVENT_MAX_BYTES}",
            size=len(data),
            limit=EVENT_MAX_BYTES,
        )


def event_headers(event: Event, msg_id: str | None = None) -> dict[str, str]:
    """Nats-Msg-Id (dedupe), Rs-Type, and the W3C trace context of the caller."""
    headers = {"Nats-Msg-Id": msg_id or event.event_id, "Rs-Type": type_of(event)}
    return inject_headers(headers)


def server_urls(url: str) -> list[str]:
    """`nats://a:4222,nats://b:4222` -> both: one setting names every node of a cluster
    (nats-py takes a list; given one string it would treat it as a single URL)."""
    urls = [u.strip() for u in url.split(",") if u.strip()]
    if not urls:
        raise ValueError("no NATS server URL given")
    return urls


class Bus:
    """One NATS connection and its JetStream context, bound to one stream and prefix."""

    def __init__(self, settings: BusSettings, nc: NATS) -> None:
        self.settings = settings
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.subjects = Subjects(settings.prefix)
        self.stream = settings.stream
        self.live_subject = f"live.{settings.prefix}.>"
        self._reconnect_hooks: list[Callable[[], None]] = []

    def on_reconnect(self, hook: Callable[[], None]) -> None:
        """Call `hook` after every reconnect (subscriptions are already renewed by then).

        Hooks run inside the client's reconnect step: they must not block; start a task.
        """
        self._reconnect_hooks.append(hook)

    @classmethod
    @asynccontextmanager
    async def connect(
        cls, settings: BusSettings, *, name: str, buffer_while_disconnected: bool = True
    ) -> AsyncIterator[Bus]:
        """`buffer_while_disconnected=False`: a publish while the connection is down fails at
        once (OutboundBufferLimitError) instead of waiting in a buffer to go out after the
        reconnect, so a caller that was told "failed" is never overtaken by its own write.
        """
        log = logger.bind(nats_url=settings.url, client=name)
        hooks: list[Callable[[], None]] = []

        async def on_disconnect() -> None:
            log.warning("nats.disconnected")

        async def on_reconnect() -> None:
            log.info("nats.reconnected")
            for hook in list(hooks):
                try:
                    hook()
                except Exception:
                    log.exception("nats.reconnect_hook_failed")

        async def on_error(exc: Exception) -> None:
            log.warning("nats.error", error=str(exc))

        options: dict[str, Any] = dict(  # as `nats.connect` passes them (floats included)
            name=name,
            connect_timeout=settings.connect_timeout_s,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            disconnected_cb=on_disconnect,
            reconnected_cb=on_reconnect,
            error_cb=on_error,
            pending_size=DEFAULT_PENDING_SIZE if buffer_while_disconnected else 0,
        )
        nc = NatsClient()
        await nc.connect(server_urls(settings.url), **options)
        try:
            bus = cls(settings, nc)
            bus._reconnect_hooks = hooks
            yield bus
        finally:
            if not nc.is_closed:
                try:
                    await nc.drain()
                except Exception:  # draining a broken connection must not mask the cause
                    await nc.close()

    # --- provisioning -----------------------------------------------------------------
    def stream_config(self) -> api.StreamConfig:
        return api.StreamConfig(
            name=self.stream,
            subjects=[self.subjects.all],
            storage=api.StorageType.FILE,
            retention=api.RetentionPolicy.LIMITS,
            max_age=self.settings.max_age_s,
            max_msgs=self.settings.max_msgs,
            duplicate_window=self.settings.duplicate_window_s,
            num_replicas=self.settings.replicas,
            allow_direct=True,
            discard=api.DiscardPolicy.OLD,
            # The server refuses what a publisher bypassing Bus.publish sends over it.
            max_msg_size=STREAM_MAX_MSG_BYTES,
            # Every stored message is re-sent on `live.<prefix>.>` with Nats-Sequence and
            # Nats-Last-Sequence headers: gateways fan out from one core subscription
            # and still know each frame's stream position (and notice a gap).
            republish=api.RePublish(src=self.subjects.all, dest=self.live_subject),
        )

    async def provision(self) -> api.StreamInfo:
        """Create the stream, or bring an existing one to the configured settings; and
        the datasets bucket. The bucket is made here, at start-up, not on the first
        upload: on a cluster, a burst of first uploads each creating the replicated
        bucket at once left every one of them timing out (5 s) while it settled."""
        config = self.stream_config()
        info: api.StreamInfo | None = None
        try:
            await self.js.stream_info(self.stream)
        except NotFoundError:
            with contextlib.suppress(nats.js.errors.BadRequestError):  # another was first
                info = await self.js.add_stream(config)
        if info is None:
            info = await self.js.update_stream(config)
        await self.datasets_bucket()
        return info

    async def datasets_bucket(self) -> ObjectStore:
        """The Object Store bucket holding uploaded datasets, created if missing, with as
        many copies as the stream (a dataset must outlive a node too)."""
        bucket = self.settings.datasets_bucket
        try:
            return await self.js.object_store(bucket)
        except nats.js.errors.BucketNotFoundError:
            with contextlib.suppress(nats.js.errors.BadRequestError):  # another was first
                return await self.js.create_object_store(bucket, config=api.ObjectStoreConfig(
                    description="Runstream datasets", storage=api.StorageType.FILE,
                    replicas=self.settings.replicas,
                ))
            return await self.js.object_store(bucket)

    # --- publishing -------------------------------------------------------------------
    async def publish(
        self,
        event: Event,
        *,
        msg_id: str | None = None,
        expected_last_subject_seq: int | None = None,
        timeout: float = 5.0,
    ) -> Published:
        """Publish one event on the subject it belongs to; returns its stream sequence.

        Raises EventTooLarge (LogTextTooLarge for a log line) for an event over the
        contract's limits: nothing is sent.
        """
        data = encode(event)
        check_size(event, data)
        headers = event_headers(event, msg_id)
        if expected_last_subject_seq is not None:
            headers["Nats-Expected-Last-Subject-Sequence"] = str(expected_last_subject_seq)
        ack = await self.js.publish(
            self.subjects.for_event(event), data, timeout=timeout,
            stream=self.stream, headers=headers,
        )
        EVENTS_PUBLISHED.labels(type_of(event)).inc()
        return Published(seq=ack.seq, duplicate=bool(ack.duplicate))

    # --- reading back -----------------------------------------------------------------
    async def last_seq(self) -> int:
        info = await self.js.stream_info(self.stream)
        return int(info.state.last_seq)

    async def first_seq(self) -> int:
        info = await self.js.stream_info(self.stream)
        return int(info.state.first_seq)

    async def get_msg(self, seq: int) -> api.RawStreamMsg:
        return await self.js.get_msg(self.stream, seq=seq, direct=True)

    async def get_last_for_subject(self, subject: str) -> api.RawStreamMsg | None:
        """The last message on one exact subject (direct get, O(1)), or None."""
        try:
            return await self.js.get_last_msg(self.stream, subject, direct=True)
        except NotFoundError:
            return None
