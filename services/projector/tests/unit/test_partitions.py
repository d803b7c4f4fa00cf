"""Partitioned projectors: P partitions by session, shared by replicas through leases.

Rows are the single projector's rows (each event keyed by its own stream sequence),
except the running step means and the ETAs derived from them, which each partition keeps
for itself; a partitioned live fold equals a partitioned rebuild row for row; reads are
as of the session's partition, and an idle partition keeps up with the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from nats.js import JetStreamContext

from runstream.bus import Bus, BusSettings
from runstream.bus.partitions import partition_of, provision_view, view_name
from runstream.contracts import LogAppended
from runstream.projector.leases import Leases, bucket_name
from runstream.projector.rebuild import rebuild_from
from runstream.projector.service import ProjectorSettings, run_projector
from runstream.store import checkpoint_name, open_store
from runstream.testing import wait_until
from services.projector.tests.unit.projector_helpers import Script, dump, publish_story

P = 4


def _settings(nats_url: str, database_url: str, names: Any, partitions: int) -> ProjectorSettings:
    return ProjectorSettings(
        nats_url=nats_url, database_url=database_url, stream=names.stream, prefix=names.prefix,
        partitions=partitions, lease_renew_s=0.5, lease_ttl_s=3.0, fetch_timeout_s=0.3,
    )  # fmt: skip


@pytest_asyncio.fixture
async def bus(nats_url: str, stream_names: Any) -> AsyncIterator[Bus]:
    settings = BusSettings(url=nats_url, stream=stream_names.stream, prefix=stream_names.prefix,
                           datasets_bucket=f"DS_{stream_names.stream}")
    async with Bus.connect(settings, name="t") as bus:
        await bus.provision()
        try:
            yield bus
        finally:
            await _cleanup(bus.js, stream_names.stream)


async def _cleanup(js: JetStreamContext, stream: str) -> None:
    for name in (view_name(stream, P), stream):
        with contextlib.suppress(Exception):
            await js.delete_stream(name)
    with contextlib.suppress(Exception):
        await js.delete_key_value(bucket_name(stream))
    with contextlib.suppress(Exception):
        await js.delete_object_store(f"DS_{stream}")


@contextlib.asynccontextmanager
async def replicas(settings: ProjectorSettings, n: int) -> AsyncIterator[None]:
    stop = asyncio.Event()
    readies = [asyncio.Event() for _ in range(n)]
    tasks = [asyncio.create_task(run_projector(settings, stop, ready)) for ready in readies]
    try:
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 20)
        yield
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)


async def _stories(bus: Bus, sessions: int) -> tuple[list[Script], int]:
    scripts = [Script(bus.js, bus.settings.prefix) for _ in range(sessions)]
    last = 0
    for script in scripts:
        last = max(last, *(await publish_story(script)))
    return scripts, last


async def test_replicas_fold_every_partition_and_equal_a_partitioned_rebuild(
    nats_url: str, database_url: str, stream_names: Any, bus: Bus
) -> None:
    settings = _settings(nats_url, database_url, stream_names, P)
    async with open_store(database_url, partitions=P) as store:
        async with replicas(settings, 2):
            scripts, last = await _stories(bus, 8)
            assert {partition_of(s.session_id, P) for s in scripts} != {0}
            # Without a session: the least position of all partitions.
            assert await store.read_models.wait_for_seq(last, timeout=30)
            live = await dump(store.pool)
        names = [checkpoint_name(P, k) for k in range(P)]
        assert [row["name"] for row in live["projection_checkpoints"]] == sorted(names)
        # Every partition, busy or idle, covers the stream's end.
        assert {row["source_seq"] for row in live["projection_checkpoints"]} == {last}
        await rebuild_from(database_url, bus.js, bus.stream, bus.subjects.all, partitions=P,
                           prefix=bus.settings.prefix)
        rebuilt = await dump(store.pool)
    assert rebuilt == live
    assert {row["part"] for row in live["step_durations"]} == {
        partition_of(s.session_id, P) for s in scripts
    }


async def test_partitioned_rows_are_the_single_projectors_rows_but_the_means(
    nats_url: str, database_url: str, stream_names: Any, bus: Bus
) -> None:
    await _stories(bus, 6)
    async with open_store(database_url) as store:
        await rebuild_from(database_url, bus.js, bus.stream, bus.subjects.all)
        single = await dump(store.pool)
        await rebuild_from(database_url, bus.js, bus.stream, bus.subjects.all, partitions=P,
                           prefix=bus.settings.prefix)
        parted = await dump(store.pool)
    for table in ("projection_checkpoints", "step_durations"):
        single.pop(table), parted.pop(table)
    for rows in (single["message_steps"], parted["message_steps"]):
        for row in rows:
            row.pop("eta_ms")  # from the running means: the partition's own
    assert parted == single


@pytest.mark.parametrize("partitions", [1, P])
async def test_reads_wait_for_min_seq_on_the_sessions_partition(
    nats_url: str, database_url: str, stream_names: Any, bus: Bus, partitions: int
) -> None:
    settings = _settings(nats_url, database_url, stream_names, partitions)
    async with open_store(database_url, partitions=partitions) as store, \
            replicas(settings, 1):  # fmt: skip
        models = store.read_models
        scripts = [Script(bus.js, bus.settings.prefix) for _ in range(8)]
        for script in scripts:
            req = script.requested()
            [*_, seq] = await script.publish(script.created(), req)
            # Read your write: the session's position reaches its own event.
            assert await models.wait_for_seq(seq, timeout=10, session_id=script.session_id)
            session = await models.get_session(script.session_id)
            assert session is not None and session["as_of_seq"] >= seq
            [log_seq] = await script.publish(script.msg(LogAppended, req.message_id, text="x"))
            assert await models.wait_for_seq(log_seq, timeout=10,
                                             session_id=script.session_id)
            message = await models.get_message(req.message_id)
            assert message is not None and message["as_of_seq"] >= log_seq
            logs = await models.get_logs(req.message_id)
            assert [row["text"] for row in logs["logs"]] == ["x"]
            assert logs["as_of_seq"] >= log_seq
        # Every session's read is as of a position at least the last event anywhere once
        # idle partitions advanced; the session list is as of the least of them.
        assert await models.wait_for_seq(log_seq, timeout=10)
        listing = await models.list_sessions(scripts[0].owner)
        assert listing["as_of_seq"] >= log_seq
        assert len(listing["sessions"]) == len(scripts)

        async def all_caught_up() -> bool:
            return all([
                ((await models.get_session(s.session_id)) or {}).get("as_of_seq", 0) >= log_seq
                for s in scripts
            ])

        await wait_until(all_caught_up, timeout=10)


async def test_leases_spread_partitions_over_replicas_and_move_when_one_leaves(
    js: JetStreamContext, stream_names: Any
) -> None:
    a = Leases(js, stream_names.stream, P, replica="a", ttl_s=2.0)
    b = Leases(js, stream_names.stream, P, replica="b", ttl_s=2.0)
    try:
        assert await a.tick() == set(range(P))  # alone: everything
        await b.tick()  # announces itself; nothing free yet
        held_a = await a.tick()  # gives back down to its share
        held_b = await b.tick()
        assert len(held_a) == len(held_b) == P // 2
        assert held_a | held_b == set(range(P))
        await b.release()
        assert await a.tick() == set(range(P)) or await a.tick() == set(range(P))
    finally:
        await a.release()
        with contextlib.suppress(Exception):
            await js.delete_key_value(bucket_name(stream_names.stream))


async def test_a_partitioned_rebuild_swapped_in_under_live_traffic_loses_nothing(
    nats_url: str, database_url: str, stream_names: Any, bus: Bus
) -> None:
    """The swap takes the projector lock exclusive while two replicas fold four
    partitions under it shared; the live partitions then carry on from the rebuilt
    checkpoints, and the end state equals a fresh partitioned rebuild."""
    settings = _settings(nats_url, database_url, stream_names, P)
    async with open_store(database_url, partitions=P) as store:
        async with replicas(settings, 2):
            scripts, _ = await _stories(bus, 4)

            async def traffic() -> int:
                last = 0
                for i in range(120):
                    script = scripts[i % len(scripts)]
                    req = script.requested(f"q{i}")
                    [*_, last] = await script.publish(
                        req, script.msg(LogAppended, req.message_id, text=f"line {i}"))
                    await asyncio.sleep(0)
                return last

            writer = asyncio.create_task(traffic())
            await asyncio.sleep(0.05)
            await rebuild_from(database_url, bus.js, bus.stream, bus.subjects.all, batch=20,
                               partitions=P, prefix=bus.settings.prefix)
            last = await writer
            assert await store.read_models.wait_for_seq(last, timeout=30)
            live = await dump(store.pool)
        await rebuild_from(database_url, bus.js, bus.stream, bus.subjects.all, partitions=P,
                           prefix=bus.settings.prefix)
        rebuilt = await dump(store.pool)
    assert rebuilt == live
    logs = [row["text"] for row in live["message_logs"] if row["text"].startswith("line ")]
    assert len(logs) == 120


async def test_a_rebuild_for_one_partition_count_removes_the_views_of_the_others(
    database_url: str, bus: Bus
) -> None:
    """Moving P from 2 to 4: after the rebuild only the view of 4 copies the stream; back
    to one projector, none."""
    prefix = bus.settings.prefix
    await _stories(bus, 2)
    await provision_view(bus.js, bus.stream, prefix, 2)
    unrelated = f"{bus.stream}_PX"  # not a view: another stream whose name starts the same
    await bus.js.add_stream(name=unrelated, subjects=[f"{prefix}_x.>"])

    async def views() -> set[str]:
        return {s.config.name for s in await bus.js.streams_info()
                if (s.config.name or "").startswith(f"{bus.stream}_P")}

    await rebuild_from(database_url, bus.js, bus.stream, bus.subjects.all, partitions=4,
                       prefix=prefix)
    assert await views() == {view_name(bus.stream, 4), unrelated}
    await rebuild_from(database_url, bus.js, bus.stream, bus.subjects.all, prefix=prefix)
    assert await views() == {unrelated}
    await bus.js.delete_stream(unrelated)
