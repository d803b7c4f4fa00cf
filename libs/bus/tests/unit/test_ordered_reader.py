"""The ordered reader never hands out N+1 before N, whatever happens to deliveries."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats.errors
import pytest

from runstream.bus import Bus, BusSettings, OrderedReader, ReaderLost
from runstream.contracts import LogAppended, new_id, utcnow
from runstream.testing import NatsCluster, wait_until


def _log(text: str) -> LogAppended:
    return LogAppended(event_id=new_id(), at=utcnow(), session_id="s", message_id="m", text=text)


async def _publish(bus: Bus, n: int, start: int = 0) -> list[int]:
    return [(await bus.publish(_log(str(i)))).seq for i in range(start, start + n)]


async def _read(reader: OrderedReader, until: int, timeout: float = 10) -> list[int]:
    got: list[int] = []

    async def loop() -> None:
        while reader.position < until:
            got.extend(e.seq for e in await reader.next_batch())

    await asyncio.wait_for(loop(), timeout)
    return got


def _reader(bus: Bus, **kw) -> OrderedReader:
    return OrderedReader(bus.js, bus.stream, bus.subjects.all, fetch_timeout_s=0.2, **kw)


async def test_reads_in_stream_order_from_the_given_position(bus: Bus):
    seqs = await _publish(bus, 40)
    reader = _reader(bus, batch=7)
    await reader.start(seqs[9])
    try:
        got = await _read(reader, seqs[-1])
    finally:
        await reader.close()
    assert got == seqs[10:]


async def test_deleted_messages_are_passed_over_and_counted(bus: Bus):
    seqs = await _publish(bus, 20)
    for seq in seqs[5:8]:
        await bus.js.delete_msg(bus.stream, seq)
    reader = _reader(bus)
    await reader.start(0)
    try:
        got = await _read(reader, seqs[-1])
    finally:
        await reader.close()
    assert got == seqs[:5] + seqs[8:]
    assert reader.skipped == 3 and reader.restarts == 0


async def test_a_lost_delivery_restarts_the_reader_at_its_position(bus: Bus):
    seqs = await _publish(bus, 30)
    reader = _reader(bus, batch=10)
    await reader.start(0)
    try:
        first = await _read(reader, seqs[9])
        # Another pull on the same consumer takes the next message away: to this reader
        # that is exactly a delivery lost on the way (consumer sequence jumps).
        thief = await bus.js.pull_subscribe_bind(stream=bus.stream, name=reader._name)
        stolen = await thief.fetch(1, timeout=2)
        assert int(stolen[0].metadata.sequence.stream) > seqs[9]
        rest = await _read(reader, seqs[-1])
    finally:
        await reader.close()
    assert first + rest == seqs, "nothing lost, nothing twice, in order"
    assert reader.restarts == 1


async def test_a_vanished_consumer_is_reported_and_reading_resumes_where_asked(bus: Bus):
    seqs = await _publish(bus, 10)
    reader = _reader(bus)
    await reader.start(0)
    try:
        first = await _read(reader, seqs[-1])
        # What a NATS restart does to an in-memory consumer.
        await bus.js.delete_consumer(bus.stream, reader._name)
        more = await _publish(bus, 10, start=10)
        with pytest.raises(ReaderLost):
            await _read(reader, more[-1], timeout=20)
        await reader.start(seqs[-1])  # the caller's position
        rest = await _read(reader, more[-1], timeout=20)
    finally:
        await reader.close()
    assert first + rest == seqs + more


async def test_read_to_end_stops_at_the_end_of_the_stream_now(bus: Bus):
    seqs = await _publish(bus, 25)
    reader = _reader(bus, batch=10)
    await reader.start(0)
    got: list[int] = []
    try:
        while batch := await reader.read_to_end():
            got.extend(e.seq for e in batch)
    finally:
        await reader.close()
    assert got == seqs


async def _retrying(bus: Bus, n: int, start: int) -> list[int]:
    """Publish through a cluster fail-over: a publish refused while the stream elects a
    leader is sent again (same event id, so it is stored once)."""
    seqs = []
    for i in range(start, start + n):
        event = _log(str(i))
        for _ in range(100):
            try:
                seqs.append((await bus.publish(event, timeout=1.0)).seq)
                break
            except (nats.errors.Error, TimeoutError):
                await asyncio.sleep(0.2)
    return seqs


async def test_a_consumer_whose_cluster_node_died_is_given_up_and_a_new_one_resumes(
    tmp_path: Path,
):
    cluster = await asyncio.to_thread(NatsCluster(base_dir=tmp_path).start)
    try:
        settings = BusSettings(url=cluster.url, stream="RS_CLUSTER", prefix="c", replicas=3)
        async with Bus.connect(settings, name="reader-cluster") as bus:
            await wait_until(lambda: _provisioned(bus), timeout=30, interval=0.2)
            seqs = await _retrying(bus, 10, 0)
            reader = _reader(bus)
            await reader.start(0)
            try:
                first = await _read(reader, seqs[-1])
                # The reader's consumer lives on one node (R1, in memory): kill that node.
                info = await bus.js.consumer_info(bus.stream, reader._name)
                assert info.cluster is not None and info.cluster.leader in cluster.names
                await asyncio.to_thread(cluster.kill9, info.cluster.leader)
                more = await _retrying(bus, 10, 10)
                with pytest.raises(ReaderLost):  # not a wait until the node is back
                    await _read(reader, more[-1], timeout=20)
                await reader.start(reader.position)  # the caller's position
                rest = await _read(reader, more[-1], timeout=20)
            finally:
                await reader.close()
        assert first + rest == seqs + more, "nothing lost, nothing twice, in order"
    finally:
        await asyncio.to_thread(cluster.cleanup)


async def _provisioned(bus: Bus) -> bool:
    """The stream exists at R3 once the cluster has elected its meta leader."""
    try:
        await bus.provision()
    except (nats.errors.Error, TimeoutError):
        return False
    return True
