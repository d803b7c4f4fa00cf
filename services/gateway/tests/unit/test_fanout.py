"""The in-process fan-out hub on a real JetStream stream."""

from __future__ import annotations

import asyncio

from runstream.bus import Bus
from runstream.contracts import LogAppended, new_id, utcnow
from runstream.gateway.fanout import Hub, Scope
from runstream.gateway.streams import Reset, open_stream
from runstream.testing import wait_until


def _log(sid: str, mid: str, i: int) -> LogAppended:
    return LogAppended(event_id=new_id(), at=utcnow(), session_id=sid, message_id=mid,
                       text=str(i))


async def test_one_subscription_feeds_every_client_of_a_session_in_order(bus: Bus):
    hub = Hub(bus)
    await hub.start()
    try:
        sid, other = new_id(), new_id()
        clients = [hub.register(Scope(kind="session", session_id=sid))[0] for _ in range(50)]
        stranger, _ = hub.register(Scope(kind="session", session_id=other))
        published = [(await bus.publish(_log(sid, "m", i))).seq for i in range(20)]
        await wait_until(lambda: _full(clients, 20), timeout=10)
        for client in clients:
            got = [client.queue.get_nowait().seq for _ in range(20)]
            assert got == published
        assert stranger.queue.empty()
        assert hub.position == published[-1]
    finally:
        await hub.stop()


def _full(clients, n):
    async def probe() -> bool:
        return all(c.queue.qsize() >= n for c in clients)
    return probe()


async def test_a_client_that_falls_behind_is_dropped_with_a_reset(bus: Bus):
    hub = Hub(bus, client_buffer=5)
    await hub.start()
    try:
        sid = new_id()
        scope = Scope(kind="session", session_id=sid)

        async def snapshot() -> dict:
            return {"as_of_seq": hub.position}

        stream = open_stream(hub, scope, None, snapshot=snapshot, heartbeat_s=30)
        reader = asyncio.ensure_future(anext(stream))  # registers, then waits for frames
        for i in range(30):  # nobody reads: the buffer of 5 overflows
            await bus.publish(_log(sid, "m", i))
        item = await asyncio.wait_for(reader, 10)
        items = [item]
        while not isinstance(items[-1], Reset):
            items.append(await asyncio.wait_for(anext(stream), 10))
        assert isinstance(items[-1], Reset) and items[-1].reason == "client_too_slow"
        assert len(items) <= 6, "at most the buffered frames, then the reset"
        await stream.aclose()
        assert hub.clients == 0, "a dropped client is unregistered"
    finally:
        await hub.stop()


async def test_a_lost_live_message_is_healed_from_jetstream(bus: Bus):
    hub = Hub(bus)
    await hub.start()
    try:
        sid = new_id()
        client, _ = hub.register(Scope(kind="session", session_id=sid))
        seqs = [(await bus.publish(_log(sid, "m", i))).seq for i in range(3)]
        await wait_until(lambda: _full([client], 3), timeout=10)
        # Simulate a core message lost on the wire: rewind the hub's position.
        hub.position = seqs[0]
        client.last_seq = seqs[0]
        while not client.queue.empty():
            client.queue.get_nowait()
        fourth = (await bus.publish(_log(sid, "m", 3))).seq
        await wait_until(lambda: _full([client], 3), timeout=10)
        got = [client.queue.get_nowait().seq for _ in range(3)]
        assert got == [seqs[1], seqs[2], fourth]
    finally:
        await hub.stop()


async def test_frames_stored_while_the_live_feed_was_away_reach_clients_after_a_reconnect(
    bus: Bus,
):
    hub = Hub(bus)
    await hub.start()
    try:
        sid = new_id()
        client, _ = hub.register(Scope(kind="session", session_id=sid))
        await hub._sub.unsubscribe()  # the live feed is away, as while disconnected
        published = [(await bus.publish(_log(sid, "m", i))).seq for i in range(3)]
        # as the client does on reconnect: the subscription renewed, then the hooks run
        hub._sub = await bus.nc.subscribe(bus.live_subject, cb=hub._on_live)
        for hook in bus._reconnect_hooks:
            hook()
        await wait_until(lambda: _full([client], 3), timeout=10)  # no later frame needed
        assert [client.queue.get_nowait().seq for _ in range(3)] == published
        assert hub.position == published[-1]
    finally:
        await hub.stop()


async def test_a_stream_with_a_lifetime_ends_by_itself_after_its_frames(bus: Bus):
    hub = Hub(bus)
    await hub.start()
    try:
        sid = new_id()
        published = (await bus.publish(_log(sid, "m", 0))).seq

        async def snapshot() -> dict:
            return {"as_of_seq": hub.position}

        stream = open_stream(hub, Scope(kind="session", session_id=sid), 0, snapshot=snapshot,
                             heartbeat_s=30, max_s=0.3)
        items = await asyncio.wait_for(_all(stream), 5)  # ends long before a heartbeat
        assert [[f.seq for f in item] for item in items] == [[published]]
    finally:
        await hub.stop()


async def _all(stream) -> list:
    return [item async for item in stream]
