"""The connection to JetStream: connect, provision the stream, publish, read back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import nats
import structlog
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

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

    @classmethod
    @asynccontextmanager
    async def connect(cls, settings: BusSettings, *, name: str) -> AsyncIterator[Bus]:
        log = logger.bind(nats_url=settings.url, client=name)

        async def on_disconnect() -> None:
            log.warning("nats_disconnected")

        async def on_reconnect() -> None:
            log.info("nats_reconnected")

        async def on_error(exc: Exception) -> None:
            log.warning("nats_error", error=str(exc))

        nc = await nats.connect(
            server_urls(settings.url),
            name=name,
            connect_timeout=settings.connect_timeout_s,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            disconnected_cb=on_disconnect,
            reconnected_cb=on_reconnect,
            error_cb=on_error,
        )
        try:
            yield cls(settings, nc)
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
        await self.datasets()
        return info

    async def datasets(self) -> Any:
        """The Object Store bucket holding uploaded datasets (created if missing)."""
        from runstream.bus.objects import dataset_store

        return await dataset_store(self)

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

    async def publish_many(self, events: list[Event]) -> list[Published]:
        """Publish unguarded events concurrently, in order of acknowledgement per subject."""
        return list(await asyncio.gather(*(self.publish(e) for e in events)))

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
