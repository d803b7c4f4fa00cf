"""Datasets live in a JetStream Object Store bucket."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import nats.js.errors
from nats.js.object_store import ObjectStore

if TYPE_CHECKING:
    from runstream.bus.bus import Bus


async def dataset_store(bus: Bus) -> ObjectStore:
    return await bus.datasets_bucket()


async def put_dataset(bus: Bus, name: str, data: bytes) -> None:
    store = await dataset_store(bus)
    await store.put(name, data)


async def get_dataset(bus: Bus, name: str) -> bytes:
    store = await dataset_store(bus)
    result = await store.get(name)
    return bytes(result.data or b"")


async def delete_dataset(bus: Bus, name: str) -> None:
    store = await dataset_store(bus)
    with contextlib.suppress(nats.js.errors.NotFoundError, nats.js.errors.ObjectNotFoundError):
        await store.delete(name)
