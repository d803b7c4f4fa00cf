"""The bus across a NATS outage: unbuffered publishes, reconnect hooks, services restarted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import nats.errors
import pytest

from runstream.bus import Bus, BusSettings, nats_unavailable
from runstream.contracts import LogAppended, new_id, utcnow
from runstream.runtime import keep_running
from runstream.testing import NatsServer, free_port, wait_until


@pytest.fixture
def own_nats(tmp_path) -> Iterator[NatsServer]:
    server = NatsServer(store_dir=tmp_path / "js", port=free_port())
    try:
        yield server
    finally:
        server.cleanup()


def _settings(server: NatsServer) -> BusSettings:
    return BusSettings(url=server.url, stream="OUTAGE", prefix="out", datasets_bucket="DS_OUT")


def _log() -> LogAppended:
    return LogAppended(event_id=new_id(), at=utcnow(), session_id="s1", message_id="m1",
                       text="x")


async def test_an_unbuffered_publish_fails_at_once_while_down_and_never_lands_later(own_nats):
    own_nats.start()
    async with Bus.connect(_settings(own_nats), name="t", buffer_while_disconnected=False) as bus:
        await bus.provision()
        before = (await bus.publish(_log())).seq
        reconnected = asyncio.Event()
        bus.on_reconnect(reconnected.set)

        await asyncio.to_thread(own_nats.stop)
        started = time.perf_counter()
        with pytest.raises(nats.errors.OutboundBufferLimitError) as refused:
            await bus.publish(_log())
        assert time.perf_counter() - started < 1.0  # not after the 5 s publish timeout
        assert nats_unavailable(refused.value)

        await asyncio.to_thread(own_nats.start)  # same port, same store
        await asyncio.wait_for(reconnected.wait(), 15)
        assert await bus.last_seq() == before  # the refused publish was not kept for later
        assert (await bus.publish(_log())).seq == before + 1


async def test_a_service_whose_loop_gives_up_during_a_nats_restart_is_started_again(own_nats):
    own_nats.start()
    stop = asyncio.Event()
    runs = 0

    async def run() -> None:
        nonlocal runs
        async with Bus.connect(_settings(own_nats), name="svc",
                               buffer_while_disconnected=False) as bus:
            await bus.provision()
            runs += 1
            while not stop.is_set():  # a loop that lets a NATS error escape, as one may
                await bus.last_seq()
                await asyncio.sleep(0.05)

    service = asyncio.create_task(keep_running("svc", run, stop))
    try:
        async def running(n: int):
            async def probe() -> bool:
                return runs >= n
            return await wait_until(probe, timeout=30)

        await running(1)
        await asyncio.to_thread(own_nats.restart)
        await running(2)  # the run failed, and was started again once NATS was back
        assert not service.done()
    finally:
        stop.set()
        await asyncio.wait_for(service, 15)


async def test_a_bug_is_not_retried_it_ends_the_service():
    calls = 0

    async def run() -> None:
        nonlocal calls
        calls += 1
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        await keep_running("svc", run, asyncio.Event())
    assert calls == 1
