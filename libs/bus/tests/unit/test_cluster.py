"""A JetStream cluster: every node's URL in one setting, replicas passed through to the
stream and the datasets bucket (made before the first upload), and worker consumers that
ride out the death of a node."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import nats.errors
import pytest

from runstream.bus import (
    Bus,
    BusSettings,
    ConsumerSpec,
    Delivery,
    MessageConsumer,
    get_dataset,
    put_dataset,
)
from runstream.bus.bus import server_urls
from runstream.contracts import LogAppended, new_id, utcnow
from runstream.testing import NatsCluster, free_port, wait_until


def test_a_comma_separated_url_names_every_node() -> None:
    assert server_urls("nats://a:4222, nats://b:4222,nats://c:4222") == [
        "nats://a:4222", "nats://b:4222", "nats://c:4222"]
    assert server_urls("nats://a:4222") == ["nats://a:4222"]
    with pytest.raises(ValueError):
        server_urls(" , ")


async def test_the_bus_connects_through_any_listed_node(bus_settings: BusSettings) -> None:
    dead = f"nats://127.0.0.1:{free_port()}"  # nothing listens there
    settings = BusSettings(url=f"{dead},{bus_settings.url}", stream=bus_settings.stream,
                           prefix=bus_settings.prefix)
    async with Bus.connect(settings, name="cluster-settings") as bus:
        assert bus.nc.is_connected
        assert bus.nc.connected_url is not None
        assert bus.nc.connected_url.port == int(bus_settings.url.rsplit(":", 1)[1])


async def test_on_a_cluster_provisioning_makes_a_replicated_bucket_and_first_uploads_succeed(
    tmp_path: Path,
) -> None:
    cluster = await asyncio.to_thread(NatsCluster(base_dir=tmp_path).start)
    try:
        settings = BusSettings(url=cluster.url, stream="RS_CLUSTER", prefix="c", replicas=3,
                               datasets_bucket="DS_CLUSTER")
        async with Bus.connect(settings, name="cluster-settings") as bus:
            await wait_until(lambda: _provisioned(bus), timeout=30, interval=0.2)
            bucket = await bus.js.stream_info("OBJ_DS_CLUSTER")
            assert bucket.config.num_replicas == 3
            # A burst of first uploads: each one used to create the bucket itself, and
            # on a cluster all of them timed out while it settled.
            await asyncio.wait_for(asyncio.gather(
                *(put_dataset(bus, f"d{i}", b"a,b\n1,2\n") for i in range(25))), 10)
            assert await get_dataset(bus, "d7") == b"a,b\n1,2\n"
    finally:
        await asyncio.to_thread(cluster.cleanup)


async def _provisioned(bus: Bus) -> bool:
    try:
        await bus.provision()
    except (nats.errors.Error, TimeoutError):
        return False  # the cluster has not elected its meta leader yet
    return True


async def test_a_worker_consumer_rides_out_the_death_of_the_node_leading_it(
    tmp_path: Path,
) -> None:
    """The durable consumer (R3) elects a new leader; meanwhile pulls are refused (503).
    The runner waits that out instead of exiting (the first version's workers died)."""
    cluster = await asyncio.to_thread(NatsCluster(base_dir=tmp_path).start)
    stop = asyncio.Event()
    try:
        settings = BusSettings(url=cluster.url, stream="RS_CLUSTER", prefix="c", replicas=3,
                               datasets_bucket="DS_CLUSTER")
        async with Bus.connect(settings, name="cluster-consumer") as bus:
            await wait_until(lambda: _provisioned(bus), timeout=30, interval=0.2)
            spec = ConsumerSpec(durable="w", filter_subjects=[bus.subjects.all],
                                ack_wait_s=2, fetch_timeout_s=0.2)
            handled: set[int] = set()

            async def handle(delivery: Delivery) -> None:
                handled.add(delivery.seq)

            runner = asyncio.create_task(MessageConsumer(bus, spec, handle).run(stop))
            try:
                first = await _publish(bus, 0)

                async def has(seqs: set[int]) -> bool:
                    return seqs <= handled

                await wait_until(lambda: has({first}), timeout=10)
                info = await wait_until(lambda: _followers_current(bus), timeout=30,
                                        interval=0.1)
                assert info.cluster is not None and info.cluster.leader is not None
                await asyncio.to_thread(cluster.kill9, info.cluster.leader)
                later = {await _publish(bus, i) for i in range(1, 11)}
                await wait_until(lambda: has(later), timeout=30)
                assert not runner.done(), runner
            finally:
                stop.set()
                await asyncio.wait_for(runner, 10)
    finally:
        await asyncio.to_thread(cluster.cleanup)


async def _followers_current(bus: Bus) -> Any:
    """The consumer's info once both followers are current (a group still forming has
    nobody to take over yet)."""
    info = await bus.js.consumer_info(bus.stream, "w")
    replicas = info.cluster.replicas if info.cluster else None
    return info if replicas and len(replicas) == 2 and all(r.current for r in replicas) \
        else None


async def _publish(bus: Bus, i: int) -> int:
    """Publish through a fail-over: refused while the stream elects a leader, sent again
    (same event id, stored once)."""
    event = LogAppended(event_id=new_id(), at=utcnow(), session_id="s", message_id="m",
                        text=str(i))
    for _ in range(100):
        try:
            return (await bus.publish(event, timeout=1.0)).seq
        except (nats.errors.Error, TimeoutError):
            await asyncio.sleep(0.2)
    raise AssertionError("the stream never took the event")
