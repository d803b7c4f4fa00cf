"""Service settings reach the bus settings they configure."""

import pytest

from runstream.runtime import ServiceSettings


def test_stream_replicas_reach_the_bus_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ServiceSettings().bus().replicas == 1
    monkeypatch.setenv("RUNSTREAM_STREAM_REPLICAS", "3")
    assert ServiceSettings().bus().replicas == 3
