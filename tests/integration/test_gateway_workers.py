"""The gateway as several worker processes on one port (RUNSTREAM_GATEWAY_WORKERS > 1).

Real processes throughout: `python -m runstream.gateway` (or `runstream up --gateways 2`)
on a real nats-server and Postgres. Which worker served a connection is read from the
kernel, not from the app: the server side of the client's TCP connection (its inode in
/proc/net/tcp) is an open file of exactly one worker process.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from runstream.store import connect, migrate
from runstream.testing import wait_until
from runstream.testing.plugin import StreamNames
from runstream.testing.procs import children
from tests.integration.conftest import sse_frames
from tests.integration.test_runstream_up import _env, _stat, _tail, running_up, still_running

START_TIMEOUT_S = 120.0  # cold imports of two workers on two shared cores
STOP_TIMEOUT_S = 30.0


def worker_pids(supervisor: int) -> set[int]:
    """The supervisor's live worker processes (not multiprocessing's resource tracker)."""
    return {child.pid for child in children(supervisor)
            if not child.zombie and "spawn_main" in child.cmdline}


def _socket_inodes(port: int, client_port: int) -> set[str]:
    """Inodes of the server-side sockets local :port, remote :client_port (IPv4 and 6)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.read().splitlines()[1:]:
                fields = line.split()
                local, remote = fields[1], fields[2]
                if int(local.rsplit(":", 1)[1], 16) == port \
                        and int(remote.rsplit(":", 1)[1], 16) == client_port \
                        and fields[9] != "0":
                    inodes.add(fields[9])
    return inodes


def serving_pid(response: httpx.Response, pids: set[int]) -> int | None:
    """The worker (among `pids`) holding the server side of `response`'s connection, which
    must still be open."""
    stream = response.extensions["network_stream"]
    client_port = stream.get_extra_info("client_addr")[1]
    server_port = stream.get_extra_info("server_addr")[1]
    wanted = {f"socket:[{inode}]" for inode in _socket_inodes(server_port, client_port)}
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except FileNotFoundError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in wanted:
                    return pid
            except OSError:
                continue
    return None


def one_connection(url: str, token: str | None = None) -> httpx.AsyncClient:
    """A client on a single keep-alive connection (so a response tells where it went)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(base_url=url, headers=headers, timeout=15.0,
                             limits=httpx.Limits(max_connections=1))


async def served_by(url: str, pids: set[int], tries: int = 64) -> dict[int, int]:
    """Open up to `tries` connections at once (each kept open while it is looked up) until
    every worker in `pids` has served one; returns worker pid -> connections served."""
    counts: dict[int, int] = {}
    async with AsyncExitStack() as stack:
        for _ in range(tries):
            client = await stack.enter_async_context(one_connection(url))
            response = await client.get("/healthz")
            assert response.status_code == 200, response.text
            pid = serving_pid(response, pids)
            assert pid is not None, f"no worker among {pids} holds the connection"
            counts[pid] = counts.get(pid, 0) + 1
            if set(counts) == pids:
                break
    return counts


@asynccontextmanager
async def client_on(url: str, token: str, pid: int, pids: set[int]
                    ) -> AsyncIterator[httpx.AsyncClient]:
    """A one-connection client whose connection the worker `pid` serves."""
    for _ in range(64):
        async with one_connection(url, token) as client:
            response = await client.get("/healthz")
            if serving_pid(response, pids) == pid:
                yield client
                return
    raise AssertionError(f"no connection reached worker {pid} in 64 tries")


# --- `python -m runstream.gateway` with two workers ---------------------------------------
def _gateway_env(nats_url: str, names: StreamNames, database_url: str,
                 **values: str) -> dict[str, str]:
    return _env(**{
        "RUNSTREAM_NATS_URL": nats_url, "RUNSTREAM_STREAM": names.stream,
        "RUNSTREAM_PREFIX": names.prefix, "RUNSTREAM_DATASETS_BUCKET": f"DS_{names.stream}",
        "RUNSTREAM_DATABASE_URL": database_url, "RUNSTREAM_JWT_SECRET": secrets.token_hex(24),
        "RUNSTREAM_LOG_JSON": "true", "PYTHONUNBUFFERED": "1", **values,
    })


def _log_events(log: Path) -> list[dict[str, Any]]:
    events = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
    return events


def _start_gateway(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "runstream.gateway"], env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


@asynccontextmanager
async def gateway_process(env: dict[str, str], log: Path) -> AsyncIterator[subprocess.Popen[bytes]]:
    """The gateway in a process group of its own (a terminal's Ctrl-C reaches the group);
    killed with the group if a test leaves it running."""
    proc = _start_gateway(env, log)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


async def _serving(proc: subprocess.Popen[bytes], log: Path) -> dict[str, Any]:
    async def line() -> dict[str, Any] | None:
        if proc.poll() is not None:
            pytest.fail(f"the gateway exited with {proc.returncode}:\n{_tail(log)}")
        return next((e for e in _log_events(log) if e.get("event") == "gateway.serving"), None)

    try:
        return await wait_until(line, timeout=START_TIMEOUT_S, interval=0.1)
    except TimeoutError:
        pytest.fail(f"no 'gateway.serving' after {START_TIMEOUT_S}s:\n{_tail(log)}")


async def test_two_workers_share_port_zero_both_serve_and_a_ctrl_c_stops_them_with_0(
    nats_url: str, stream_names: StreamNames, database_url: str, tmp_path: Path,
) -> None:
    conn = await connect(database_url, schema="runstream")
    try:
        await migrate(conn, "runstream")
    finally:
        await conn.close()
    env = _gateway_env(nats_url, stream_names, database_url,
                       RUNSTREAM_HTTP_PORT="0", RUNSTREAM_GATEWAY_WORKERS="2")
    log = tmp_path / "gateway.log"
    async with gateway_process(env, log) as proc:
        serving = await _serving(proc, log)
        port = serving["port"]  # port 0: the supervisor chose it, and says which
        assert port > 0 and serving["workers"] == 2
        pids = worker_pids(proc.pid)
        assert pids == set(serving["pids"]) and len(pids) == 2
        url = f"http://127.0.0.1:{port}"
        counts = await served_by(url, pids)
        assert set(counts) == pids, counts  # the kernel spread connections over both
        async with httpx.AsyncClient(base_url=url, timeout=15.0) as client:
            ready = await client.get("/readyz")  # NATS and Postgres, from a worker
            assert ready.status_code == 200, ready.text

        os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole group
        code = await asyncio.to_thread(proc.wait, STOP_TIMEOUT_S)
        assert code == 0, _tail(log)
        stopped = {e["pid"]: e["exit_code"] for e in _log_events(log)
                   if e.get("event") == "gateway.worker_stopped"}
        assert stopped == {pid: 0 for pid in pids}, _tail(log)
        assert not any(_stat(pid) for pid in pids)
        with pytest.raises(httpx.ConnectError):
            async with httpx.AsyncClient(base_url=url, timeout=5.0) as client:
                await client.get("/healthz")


async def test_workers_stop_by_themselves_when_their_supervisor_is_killed(
    nats_url: str, stream_names: StreamNames, database_url: str, tmp_path: Path,
) -> None:
    env = _gateway_env(nats_url, stream_names, database_url,
                       RUNSTREAM_HTTP_PORT="0", RUNSTREAM_GATEWAY_WORKERS="2")
    log = tmp_path / "gateway.log"
    async with gateway_process(env, log) as proc:
        serving = await _serving(proc, log)
        pids = worker_pids(proc.pid)
        assert len(pids) == 2
        os.kill(proc.pid, signal.SIGKILL)  # the supervisor only, not its group
        proc.wait()

        async def orphans_gone() -> bool:
            return not any((st := _stat(pid)) is not None and st[1] != "Z" for pid in pids)

        await wait_until(orphans_gone, timeout=STOP_TIMEOUT_S, interval=0.1)
        with pytest.raises(httpx.ConnectError):  # nobody holds the port any more
            async with httpx.AsyncClient(timeout=5.0) as client:
                await client.get(f"http://127.0.0.1:{serving['port']}/healthz")


async def test_workers_that_cannot_start_make_the_gateway_exit_non_zero(
    nats_url: str, stream_names: StreamNames, database_url: str, tmp_path: Path,
) -> None:
    # Every worker refuses a JWT secret that is too short: the supervisor stops the
    # others and exits 3, as one gateway whose start-up failed.
    env = _gateway_env(nats_url, stream_names, database_url, RUNSTREAM_HTTP_PORT="0",
                       RUNSTREAM_GATEWAY_WORKERS="2", RUNSTREAM_JWT_SECRET="short")
    log = tmp_path / "secret.log"
    async with gateway_process(env, log) as proc:
        code = await asyncio.to_thread(proc.wait, START_TIMEOUT_S)
        assert code == 3, _tail(log)
        assert any(e.get("event") == "gateway.worker_start_failed" for e in _log_events(log))
        assert worker_pids(proc.pid) == set()

    # A port named that another program holds (without SO_REUSEPORT): refused at once.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = _gateway_env(nats_url, stream_names, database_url,
                           RUNSTREAM_HTTP_PORT=str(taken.getsockname()[1]),
                           RUNSTREAM_GATEWAY_WORKERS="2")
        log = tmp_path / "port.log"
        async with gateway_process(env, log) as proc:
            code = await asyncio.to_thread(proc.wait, START_TIMEOUT_S)
            assert code == 3, _tail(log)
            assert any(e.get("event") == "gateway.port_unavailable" for e in _log_events(log))


# --- `runstream up --gateways 2` ----------------------------------------------------------
async def two_workers(up: Any) -> tuple[int, set[int]]:
    """Under `runstream up --gateways 2`, once serving: the supervisor and its 2 workers."""
    await up.wait_output(r'"event": "gateway.serving"', timeout=START_TIMEOUT_S)
    found = re.search(r"^gateway\s*\| started \(pid (\d+)\)$", up.output(), re.M)
    assert found, up.output()[-4000:]
    supervisor = int(found[1])
    pids = worker_pids(supervisor)
    assert len(pids) == 2, up.output()[-4000:]
    return supervisor, pids


async def test_up_with_two_gateway_workers_streams_across_them_and_restarts_one_killed(
    tmp_path: Path, database_url: str,
) -> None:
    env = _env(RUNSTREAM_DATABASE_URL=database_url, RUNSTREAM_CLEANUP_EVERY="off")
    async with running_up(tmp_path, env, "--gateways", "2") as up:
        supervisor, pids = await two_workers(up)
        assert "(2 gateway workers on this port)" in up.output()
        url, token = up.values["RUNSTREAM_URL"], up.values["RUNSTREAM_TOKEN"]
        assert set(await served_by(url, pids)) == pids

        # An SSE client on one worker sees a submit made through the other: each worker
        # has a live subscription of its own.
        first, second = sorted(pids)
        async with client_on(url, token, second, pids) as writer:
            created = await writer.post("/api/sessions", json={"title": "two workers"})
            assert created.status_code == 201, created.text
            sid = created.json()["session_id"]
        async with client_on(url, token, first, pids) as reader, \
                reader.stream("GET", f"/api/sessions/{sid}/events") as events:
            assert events.status_code == 200
            assert serving_pid(events, pids) == first
            frames = sse_frames(events)
            seen = await asyncio.wait_for(anext(frames), 30)  # the replay: session_created
            assert seen.event == "session_created", seen
            async with client_on(url, token, second, pids) as writer:
                submitted = await writer.post(f"/api/sessions/{sid}/analyses",
                                              json={"question": "total revenue by region"})
                assert submitted.status_code == 202, submitted.text
                assert serving_pid(submitted, pids) == second
            mid = submitted.json()["message_id"]

            async def requested() -> None:
                async for frame in frames:
                    if frame.event == "analysis_requested":
                        assert frame.data["message_id"] == mid
                        return

            await asyncio.wait_for(requested(), 30)
            await frames.aclose()

        # kill -9 of one worker: the other keeps serving; the supervisor starts another.
        os.kill(first, signal.SIGKILL)

        async def gone() -> bool:
            return first not in worker_pids(supervisor)

        await wait_until(gone, timeout=10)
        for _ in range(10):
            async with one_connection(url) as client:
                response = await client.get("/readyz")
                assert response.status_code == 200, response.text
        await up.wait_output(r'"event": "gateway.worker_restarting"')
        assert '"exit_code": -9' in up.output()

        async def replaced() -> set[int]:
            now = worker_pids(supervisor)
            return now if len(now) == 2 and second in now else set()

        renewed = await wait_until(replaced, timeout=START_TIMEOUT_S, interval=0.1)
        await up.wait_output(r'"event": "gateway.worker_serving"', timeout=START_TIMEOUT_S)
        assert set(await served_by(url, renewed)) == renewed
    # running_up has checked: up exited 0, the gateway (the supervisor) stopped with 0,
    # and no process it started, the workers included, is left.
    assert still_running(up.started) == []


async def test_a_stream_cut_by_a_killed_worker_resumes_on_another_with_nothing_lost_or_twice(
    tmp_path: Path, database_url: str,
) -> None:
    """kill -9 of the worker serving a live SSE stream (its frames written straight to the
    connection) while events keep coming: the client reconnects with Last-Event-ID, lands
    on whichever worker the kernel picks, and sees every event once, in order."""
    renames = 120
    env = _env(RUNSTREAM_DATABASE_URL=database_url, RUNSTREAM_CLEANUP_EVERY="off",
               RUNSTREAM_RATE_LIMIT_WRITES="1000000/minute")
    async with running_up(tmp_path, env, "--gateways", "2") as up:
        _, pids = await two_workers(up)
        url, token = up.values["RUNSTREAM_URL"], up.values["RUNSTREAM_TOKEN"]
        victim, survivor = sorted(pids)
        async with client_on(url, token, survivor, pids) as writer:
            created = await writer.post("/api/sessions", json={"title": "t-start"})
            assert created.status_code == 201, created.text
            sid = created.json()["session_id"]

            async def rename_all() -> None:  # events keep coming through the survivor
                for i in range(renames):
                    r = await writer.patch(f"/api/sessions/{sid}", json={"title": f"t{i}"})
                    assert r.status_code == 200, r.text

            titles: list[str] = []
            ids: list[int] = []
            killed = False

            async def read(client: httpx.AsyncClient, cursor: int | None) -> None:
                nonlocal killed
                headers = {"Last-Event-ID": str(cursor)} if cursor is not None else {}
                async with client.stream("GET", f"/api/sessions/{sid}/events",
                                         headers=headers) as events:
                    assert events.status_code == 200
                    async for frame in sse_frames(events):
                        assert frame.event != "reset", frame
                        ids.append(int(frame.id or 0))
                        if frame.event == "session_renamed":
                            titles.append(frame.data["title"])
                            if len(titles) == renames // 4 and not killed:
                                assert serving_pid(events, pids) == victim
                                killed = True
                                os.kill(victim, signal.SIGKILL)
                        if titles[-1:] == [f"t{renames - 1}"]:
                            return

            async with client_on(url, token, victim, pids) as reader:
                writing = asyncio.create_task(rename_all())
                with pytest.raises(httpx.HTTPError):  # the connection dies with the worker
                    await asyncio.wait_for(read(reader, None), 60)
            assert killed
            async with one_connection(url, token) as again:  # any worker still up
                await asyncio.wait_for(read(again, ids[-1]), 60)
            await writing
    assert titles == [f"t{i}" for i in range(renames)], "every rename once, in order"
    assert ids == sorted(set(ids)), "no frame twice, none out of order"


def _metric(text: str, name: str) -> float:
    """One sample of a Prometheus text exposition, by its name with labels."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"no {name} in:\n{text}")


async def test_metrics_from_any_worker_count_every_worker(
    tmp_path: Path, database_url: str,
) -> None:
    """Counters are summed over the workers, the connected-clients gauge over the live
    ones: a worker killed with -9 stops counting its clients."""
    env = _env(RUNSTREAM_DATABASE_URL=database_url, RUNSTREAM_CLEANUP_EVERY="off")
    created = 'runstream_events_published_total{type="session_created"}'
    async with running_up(tmp_path, env, "--gateways", "2") as up:
        supervisor, pids = await two_workers(up)
        url, token = up.values["RUNSTREAM_URL"], up.values["RUNSTREAM_TOKEN"]
        first, second = sorted(pids)
        sessions = []
        for pid, n in ((first, 2), (second, 3)):
            async with client_on(url, token, pid, pids) as client:
                for _ in range(n):
                    r = await client.post("/api/sessions", json={"title": "m"})
                    assert r.status_code == 201, r.text
                    sessions.append(r.json()["session_id"])
        for pid in (first, second):
            async with client_on(url, token, pid, pids) as client:
                text = (await client.get("/metrics")).text
                assert _metric(text, created) == 5, "every worker's publishes, summed"

        async with AsyncExitStack() as streams:
            for pid, sid in ((first, sessions[0]), (second, sessions[1])):
                client = await streams.enter_async_context(client_on(url, token, pid, pids))
                events = await streams.enter_async_context(
                    client.stream("GET", f"/api/sessions/{sid}/events"))
                assert events.status_code == 200 and serving_pid(events, pids) == pid

            async def clients_counted(n: int) -> Any:
                async def check() -> bool:
                    async with one_connection(url) as client:
                        text = (await client.get("/metrics")).text
                        return _metric(text, "runstream_stream_clients") == n
                return check

            await wait_until(await clients_counted(2), timeout=10)
            os.kill(first, signal.SIGKILL)  # its stream goes with it

            async def replaced() -> bool:
                now = worker_pids(supervisor)
                return len(now) == 2 and first not in now

            await wait_until(replaced, timeout=START_TIMEOUT_S, interval=0.1)
            await up.wait_output(r'"event": "gateway.worker_serving"', timeout=START_TIMEOUT_S)
            await wait_until(await clients_counted(1), timeout=10)
