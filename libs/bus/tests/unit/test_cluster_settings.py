"""A JetStream cluster: every node's URL in one setting, replicas passed through to the
stream and the datasets bucket, which provisioning makes before the first upload."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats.errors
import pytest

from runstream.bus import Bus, BusSettings, ServiceSettings, get_dataset, put_dataset
from runstream.bus.bus import server_urls
from runstream.testing import NatsCluster, free_port, wait_until


def test_a_comma_separated_url_names_every_node() -> None:
    assert server_urls("nats://a:4222, nats://b:4222,nats://c:4222") == [
        "nats://a:4222", "nats://b:4222", "nats://c:4222"]
    assert server_urls("nats://a:4222") == ["nats://a:4222"]
    with pytest.raises(ValueError):
        server_urls(" , ")


def test_stream_replicas_reach_the_bus_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ServiceSettings().bus().replicas == 1
    monkeypatch.setenv("RUNSTREAM_STREAM_REPLICAS", "3")
    assert ServiceSettings().bus().replicas == 3


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
