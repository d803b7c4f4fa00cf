"""Settings for a JetStream cluster: every node's URL in one setting, replicas passed through."""

from __future__ import annotations

import pytest

from runstream.bus import Bus, BusSettings, ServiceSettings
from runstream.bus.bus import server_urls
from runstream.testing import free_port


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
