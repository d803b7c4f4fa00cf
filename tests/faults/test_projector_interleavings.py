"""No interleaving of faults makes the projector lose or repeat an event.

The projector process runs against a stream that keeps growing, while a seeded fault
injector interleaves, at random moments: the projector's Postgres connections killed
mid-batch (what a Postgres restart does), its reader's consumer deleted (what a NATS
restart does to an in-memory consumer), a delivery stolen from its consumer (a pull that
expired while messages were on the way), and the process SIGKILLed and started again
(a crash). At the end the read models must equal the whole stream folded once, from
scratch, in one go.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections import Counter
from typing import Any

import asyncpg
import pytest

from runstream.bus import Bus, BusSettings, stream_identity
from runstream.projector.projector import Projector
from runstream.store import create_pool, migrate
from runstream.testing import wait_until
from services.projector.tests.unit.projector_helpers import Script, dump, publish_story, read_items
from tests.faults.support import Services

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
    seed: int, nats_url: str, database_url: str, stream_names: Any, tmp_path: Any,
) -> None:
    rng = random.Random(seed)
    services = Services({
        **os.environ, "RUNSTREAM_NATS_URL": nats_url, "RUNSTREAM_DATABASE_URL": database_url,
        "RUNSTREAM_STREAM": stream_names.stream, "RUNSTREAM_PREFIX": stream_names.prefix,
        "RUNSTREAM_BATCH_SIZE": str(rng.choice([7, 32, 256])),
        "RUNSTREAM_RETRY_MIN_S": "0.01", "RUNSTREAM_RETRY_MAX_S": "0.1",
        "RUNSTREAM_LOG_JSON": "true",
    }, tmp_path)
    bus_settings = BusSettings(url=nats_url, stream=stream_names.stream,
                               prefix=stream_names.prefix)
    db = database_url.rsplit("/", 1)[1]
    injected: Counter[str] = Counter()
    async with Bus.connect(bus_settings, name="faults") as bus:
        await bus.provision()
        services.start("projector", "projector")
        admin = await asyncpg.connect(database_url)
        try:
            async def inject(fault: str) -> None:
                if fault == "kill_connections":
                    if await _kill_connections(admin, db):
                        injected[fault] += 1
                elif fault == "drop_consumer":
                    for name in await wait_until(lambda: _projector_consumers(bus), timeout=20):
                        with contextlib.suppress(Exception):
                            await bus.js.delete_consumer(bus.stream, name)
                            injected[fault] += 1
                elif fault == "steal_delivery":
                    # Races the projector's own pulls: try until one message is taken.
                    for _ in range(20):
                        names = await wait_until(lambda: _projector_consumers(bus), timeout=20)
                        with contextlib.suppress(Exception):
                            thief = await bus.js.pull_subscribe_bind(
                                stream=bus.stream, name=names[0])
                            try:
                                await script.publish(script.created())
                                if await thief.fetch(1, timeout=0.2):
                                    injected[fault] += 1
                                    break
                            finally:
                                await thief.unsubscribe()
                else:  # crash: the process dies mid-whatever, and starts again
                    services.kill9("projector")
                    services.start("projector", "projector")
                    injected[fault] += 1

            # Each round publishes a whole session's story while one fault strikes at a
            # random moment inside it.
            script = Script(bus.js, stream_names.prefix)  # filler sessions for the thief
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
            services.stop_all()
            await admin.close()
    print(f"\nseed {seed}: {last} events, faults injected {dict(injected)}")
    assert set(injected) == set(FAULTS), f"every kind of fault struck: {dict(injected)}"
