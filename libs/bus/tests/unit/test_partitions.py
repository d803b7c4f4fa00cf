"""The partitioned view: NATS puts each session in one partition, and says which event it was."""

from __future__ import annotations

from runstream.bus import Bus, OrderedReader
from runstream.bus.partitions import (
    partition_filter,
    partition_of,
    provision_view,
    source_of,
    view_name,
)
from runstream.contracts import LogAppended, new_id, utcnow
from runstream.testing import wait_until

PARTITIONS = 4


def test_the_python_partition_is_fnv1a_of_the_session_id() -> None:
    assert [partition_of(f"sess{i}", 4) for i in range(3)] == [1, 2, 3]
    assert all(partition_of(new_id(), 16) in range(16) for _ in range(100))


async def test_every_partition_reads_its_sessions_in_stream_order(bus: Bus) -> None:
    await provision_view(bus.js, bus.stream, bus.subjects.prefix, PARTITIONS)
    view = view_name(bus.stream, PARTITIONS)
    try:
        sessions = [new_id() for _ in range(12)]
        published: list[tuple[int, str]] = []
        for i in range(60):
            sid = sessions[i % len(sessions)]
            event = LogAppended(event_id=new_id(), at=utcnow(), session_id=sid,
                                message_id="m", text=str(i))
            published.append(((await bus.publish(event)).seq, sid))

        async def sourced() -> bool:
            return (await bus.js.stream_info(view)).state.messages == len(published)

        await wait_until(sourced, timeout=10)
        seen: dict[int, tuple[int, str]] = {}
        for k in range(PARTITIONS):
            reader = OrderedReader(bus.js, view, partition_filter(bus.subjects.prefix, k),
                                   fetch_timeout_s=0.2)
            await reader.start(0)
            try:
                items = await reader.read_to_end()
                while more := await reader.read_to_end():
                    items += more
            finally:
                await reader.close()
            origin = [source_of(entry.headers) for entry in items]
            assert [seq for seq, _ in origin] == sorted(seq for seq, _ in origin)
            for (seq, subject), entry in zip(origin, items, strict=True):
                sid = subject.split(".")[1]
                assert partition_of(sid, PARTITIONS) == k  # where NATS put it
                assert entry.subject.split(".")[1:3] == [str(k), sid]
                seen[seq] = (k, sid)
        assert sorted(seen) == [seq for seq, _ in published]  # each event in one partition
    finally:
        await bus.js.delete_stream(view)
