"""No interleaving of faults makes the projector lose or repeat an event.

The real fold loop runs against a stream that keeps growing, while a seeded fault
injector interleaves, at random moments: the projector's Postgres connections killed
mid-batch (what a Postgres restart does), its reader's consumer deleted (what a NATS
restart does to an in-memory consumer), a delivery stolen from its consumer (a pull that
expired while messages were on the way), and the whole service cancelled mid-batch and
started again (a crash). At the end the read models must equal the whole stream folded
once, from scratch, in one go.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from typing import Any

import asyncpg
import pytest

from runstream.bus import Bus, BusSettings, stream_identity
from runstream.projector.projector import Projector
from runstream.projector.service import ProjectorSettings, run_projector
from runstream.store import create_pool, migrate
from runstream.testing import wait_until
from services.projector.tests.unit.projector_helpers import Script, dump, publish_story, read_items

FAULTS = ("kill_connections", "drop_consumer", "steal_delivery", "crash")
ROUNDS = 16


async def _kill_connections(admin: asyncpg.Connection, db: str) -> int:
    """Terminate every connection of the test database but the admin's own."""
    return len(await admin.fetch(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = $1 AND pid <> pg_backend_pid()", db))


async def _projector_consumers(bus: Bus) -> list[str]:
    infos = await bus.js.consumers_info(bus.stream)
    return [i.name for i in infos if i.name.startswith("projector_")]


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_no_interleaving_of_faults_loses_or_repeats_an_event(
    seed: int, nats_url: str, database_url: str, stream_names: Any,
) -> None:
    rng = random.Random(seed)
    settings = ProjectorSettings(
        nats_url=nats_url, database_url=database_url, stream=stream_names.stream,
        prefix=stream_names.prefix, batch_size=rng.choice([7, 32, 256]),
        retry_min_s=0.01, retry_max_s=0.1,
    )
    bus_settings = BusSettings(url=nats_url, stream=stream_names.stream,
                               prefix=stream_names.prefix)
    db = database_url.rsplit("/", 1)[1]
    injected: Counter[str] = Counter()
    stop = asyncio.Event()
    service = asyncio.create_task(run_projector(settings, stop))
    async with Bus.connect(bus_settings, name="faults") as bus:
        await bus.provision()
        admin = await asyncpg.connect(database_url)
        try:
            async def inject(fault: str) -> None:
                nonlocal service, stop
                if fault == "kill_connections":
                    if await _kill_connections(admin, db):
                        injected[fault] += 1
                elif fault == "drop_consumer":
                    for name in await _projector_consumers(bus):
                        with contextlib.suppress(Exception):
                            await bus.js.delete_consumer(bus.stream, name)
                            injected[fault] += 1
                elif fault == "steal_delivery":
                    for name in await _projector_consumers(bus):
                        with contextlib.suppress(Exception):
                            thief = await bus.js.pull_subscribe_bind(
                                stream=bus.stream, name=name)
                            if await thief.fetch(1, timeout=0.2):
                                injected[fault] += 1
                            await thief.unsubscribe()
                else:  # crash: the service dies mid-whatever, and starts again
                    service.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await service
                    injected[fault] += 1
                    stop = asyncio.Event()
                    service = asyncio.create_task(run_projector(settings, stop))

            # Each round publishes a whole session's story while one fault strikes at a
            # random moment inside it.
            faults = [f for f in FAULTS for _ in range(ROUNDS // len(FAULTS))]
            rng.shuffle(faults)  # every kind, in a seeded order, at seeded moments
            for fault in faults:
                story = asyncio.create_task(publish_story(Script(bus.js, stream_names.prefix)))
                await asyncio.sleep(rng.uniform(0.0, 0.05))
                await inject(fault)
                await story
            last = await bus.last_seq()

            async def caught_up() -> bool:
                with contextlib.suppress(asyncpg.PostgresError, OSError):
                    seq = await admin.fetchval(
                        "SELECT seq FROM runstream.projection_checkpoints")
                    return bool(seq is not None and seq >= last)
                return False

            await wait_until(caught_up, timeout=60, interval=0.05)
            stop.set()
            await asyncio.wait_for(service, 20)

            # Reference: the whole stream folded once, in one go, into another schema.
            ref_pool = await create_pool(database_url, schema="reference", max_size=2)
            try:
                await migrate(ref_pool, "reference")
                reference = Projector(ref_pool, lock_key=None, notify=False)
                await reference.position(await stream_identity(bus.js, bus.stream))
                await reference.apply_batch(
                    await read_items(bus.js, bus.stream, list(range(1, last + 1))), after=0)
                live = await dump(admin, "runstream")
                assert live == await dump(admin, "reference")
            finally:
                await ref_pool.close()
        finally:
            stop.set()
            if not service.done():
                service.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await service
            await admin.close()
    print(f"\nseed {seed}: {last} events, faults injected {dict(injected)}")
    assert sum(injected.values()) >= ROUNDS // 2 and len(injected) >= 3, "faults happened"
