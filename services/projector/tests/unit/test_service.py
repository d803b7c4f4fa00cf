"""The service: a durable consumer folds the live stream; SIGTERM stops it cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from typing import Any

import pytest
from prometheus_client import REGISTRY

from runstream.bus import Bus, BusSettings
from runstream.contracts import LogAppended
from runstream.projector.rebuild import rebuild
from runstream.projector.service import ProjectorSettings, run_projector
from runstream.store import open_store
from runstream.testing import wait_until
from services.projector.tests.unit.projector_helpers import Script


async def _equals(value: Any, expected: Any) -> bool:
    return await value == expected


def _faults(kind: str) -> float:
    return REGISTRY.get_sample_value("runstream_projector_faults_total", {"kind": kind}) or 0.0


def _settings(
    nats_url: str, database_url: str, names: Any, partitions: int = 1
) -> ProjectorSettings:
    return ProjectorSettings(
        nats_url=nats_url, database_url=database_url, stream=names.stream, prefix=names.prefix,
        partitions=partitions,
    )


@pytest.mark.parametrize("partitions", [1, 4])
async def test_the_service_folds_what_is_published_within_moments(
    nats_url: str, database_url: str, stream_names: Any, partitions: int
) -> None:
    settings = _settings(nats_url, database_url, stream_names, partitions)
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_projector(settings, stop, ready))
    try:
        await asyncio.wait_for(ready.wait(), 15)
        async with (
            Bus.connect(
                BusSettings(url=nats_url, stream=stream_names.stream, prefix=stream_names.prefix),
                name="t",
            ) as bus,
            open_store(database_url, migrate=False, partitions=partitions) as store,
        ):
            script = Script(bus.js, stream_names.prefix)
            req = script.requested()
            seqs = await script.publish(script.created(), req)
            assert await store.read_models.wait_for_seq(seqs[-1], timeout=10)
            status = await store.read_models.analysis_status(script.session_id)
            assert status is not None
            assert (status["is_analyzing"], status["message_id"]) == (True, req.message_id)

            # An idle projector picks up a single event fast (no batch-fill wait): a read
            # of the session waits on its partition only.
            started = time.perf_counter()
            [seq] = await script.publish(script.msg(LogAppended, req.message_id, text="hi"))
            assert await store.read_models.wait_for_seq(seq, timeout=10,
                                                        session_id=script.session_id)
            assert time.perf_counter() - started < 1.0
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


@pytest.mark.parametrize("partitions", [1, 4])
async def test_a_restarted_service_resumes_from_its_checkpoint(
    nats_url: str, database_url: str, stream_names: Any, partitions: int
) -> None:
    settings = _settings(nats_url, database_url, stream_names, partitions)
    bus_settings = BusSettings(url=nats_url, stream=stream_names.stream, prefix=stream_names.prefix)
    async with (
        Bus.connect(bus_settings, name="t") as bus,
        open_store(database_url, partitions=partitions) as store,
    ):
        await bus.provision()
        script = Script(bus.js, stream_names.prefix)
        req = script.requested()
        await script.publish(script.created(), req)
        for run in range(2):
            stop = asyncio.Event()
            task = asyncio.create_task(run_projector(settings, stop))
            logs = [script.msg(LogAppended, req.message_id, text=f"{run}-{i}") for i in range(20)]
            seqs = await script.publish(*logs)
            assert await store.read_models.wait_for_seq(seqs[-1], timeout=10)
            stop.set()
            await asyncio.wait_for(task, 15)
        logs = await store.read_models.get_logs(req.message_id)
        assert [log["text"] for log in logs["logs"]] == [
            f"{run}-{i}" for run in range(2) for i in range(20)
        ]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_python_m_runstream_projector_stops_cleanly_on_sigterm(
    nats_url: str, database_url: str, stream_names: Any
) -> None:
    env = {
        **os.environ,
        "RUNSTREAM_NATS_URL": nats_url,
        "RUNSTREAM_DATABASE_URL": database_url,
        "RUNSTREAM_STREAM": stream_names.stream,
        "RUNSTREAM_PREFIX": stream_names.prefix,
        "RUNSTREAM_LOG_JSON": "true",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "runstream.projector",
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        async with open_store(database_url) as store:
            bus_settings = BusSettings(
                url=nats_url, stream=stream_names.stream, prefix=stream_names.prefix
            )
            async with Bus.connect(bus_settings, name="t") as bus:
                await bus.provision()
                script = Script(bus.js, stream_names.prefix)
                [seq] = await script.publish(script.created())
                assert await store.read_models.wait_for_seq(seq, timeout=20)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
        stderr = (await proc.stderr.read()).decode()
        assert "projector.stopped" in stderr
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_recreated_stream_is_refused_until_a_rebuild_then_folding_resumes(
    nats_url: str, database_url: str, stream_names: Any
) -> None:
    settings = _settings(nats_url, database_url, stream_names)
    settings.mismatch_recheck_s = 0.2
    bus_settings = BusSettings(url=nats_url, stream=stream_names.stream, prefix=stream_names.prefix)
    mismatches_before = _faults("stream_mismatch")
    stop = asyncio.Event()
    task = asyncio.create_task(run_projector(settings, stop))
    try:
        async with (
            Bus.connect(bus_settings, name="t") as bus,
            open_store(database_url) as store,
        ):
            await bus.provision()
            def session(title: str) -> Any:  # a new session each time
                return Script(bus.js, stream_names.prefix).created(title=title)

            script = Script(bus.js, stream_names.prefix)
            old = await script.publish(*[session(f"old {i}") for i in range(10)])
            assert await store.read_models.wait_for_seq(old[-1], timeout=10)

            # The stream's data is gone (a new volume); Postgres keeps the read models.
            await bus.js.delete_stream(bus.stream)
            await bus.provision()
            new = await script.publish(session("new"))

            async def refused() -> bool:
                return _faults("stream_mismatch") > mismatches_before

            await wait_until(refused, timeout=15, interval=0.05)
            assert await store.read_models.checkpoint() == old[-1], "nothing folded over it"

            report = await rebuild(database_url, bus)
            assert (report.checkpoint, report.previous_checkpoint) == (new[-1], old[-1])
            more = await script.publish(session("after"))

            async def titles() -> list[str]:
                rows = await store.pool.fetch("SELECT title FROM sessions ORDER BY title")
                return [r["title"] for r in rows]

            # The projector resumes by itself on the rebuilt, newly bound read models.
            await wait_until(lambda: _equals(titles(), ["after", "new"]), timeout=10)
            assert await store.read_models.checkpoint() == more[-1]
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
