"""`runstream up` as a user runs it: a real subprocess, real nats-server and Postgres.

Starts the stack on free ports, waits for dev.env and the gateway's /readyz, uses it,
then sends SIGINT (Ctrl-C) and checks that every child exited 0 and that no process it
started is left behind. Which database it picks: the one given, else the `runstream`
database on the local server (created), else a cluster of its own; never a plain
DATABASE_URL and never the server's `postgres` database.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import jwt
import pytest

from runstream.cli.settings import read_env_file
from runstream.cli.tokens import resolve_secret
from runstream.testing import PostgresCluster, free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
RUNSTREAM = Path(sys.executable).parent / "runstream"
START_TIMEOUT_S = 120.0  # cold imports of every service on two shared cores
STOP_TIMEOUT_S = 20.0


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(ppid, state, start time) of a live process, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[1]), fields[0], int(fields[19])


def descendants(root: int) -> dict[int, int]:
    """Every live descendant of `root`: pid -> start time (guards against pid reuse)."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        st = _stat(int(entry.name))
        if st is not None:
            children.setdefault(st[0], []).append(int(entry.name))
            starts[int(entry.name)] = st[2]
    found: dict[int, int] = {}
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found[child] = starts[child]
            todo.append(child)
    return found


def still_running(procs: dict[int, int]) -> list[str]:
    left = []
    for pid, start in procs.items():
        st = _stat(pid)
        if st is not None and st[2] == start and st[1] != "Z":
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            left.append(f"{pid}: {cmd}")
    return left


def _tail(log: Path, chars: int = 6000) -> str:
    return log.read_text(errors="replace")[-chars:]


def _commands(pids: dict[int, int]) -> str:
    found = []
    for pid in pids:
        try:
            found.append(Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"))
        except FileNotFoundError:
            continue
    return " ".join(found)


def _start_up(
    argv: list[str], cwd: Path, env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


async def _wait_for(what: str, probe, proc: subprocess.Popen[bytes], log: Path, timeout: float):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"runstream up exited ({proc.returncode}) before {what}:\n{_tail(log)}")
        if loop.time() > deadline:
            pytest.fail(f"no {what} after {timeout}s:\n{_tail(log)}")
        await asyncio.sleep(0.1)


@dataclass
class Up:
    proc: subprocess.Popen[bytes]
    log: Path
    data_dir: Path
    values: dict[str, str] = field(default_factory=dict)  # dev.env
    started: dict[int, int] = field(default_factory=dict)  # pid -> start time

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def wait_output(self, pattern: str, count: int = 1, timeout: float = 60) -> None:
        async def seen() -> bool:
            if self.proc.poll() is not None:
                pytest.fail(f"runstream up exited ({self.proc.returncode}):\n{_tail(self.log)}")
            return len(re.findall(pattern, self.output(), re.M)) >= count

        try:
            await wait_until(seen, timeout=timeout, interval=0.1)
        except TimeoutError:
            pytest.fail(f"no {count} x {pattern!r} after {timeout}s:\n{_tail(self.log)}")


def _env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNSTREAM_")}
    env.pop("DATABASE_URL", None)
    env.update(values)
    return env


@asynccontextmanager
async def running_up(cwd: Path, env: dict[str, str], *args: str,
                     data_dir: Path | None = None) -> AsyncIterator[Up]:
    """`runstream up` on free ports until dev.env is written and /readyz answers; then
    Ctrl-C (SIGINT): it must exit 0 with every child stopped 0 and nothing left behind."""
    data_dir = data_dir or cwd / ".runstream"
    log = cwd / "up.log"
    http_port = free_port()
    proc = _start_up(
        [str(RUNSTREAM), "up", "--http-port", str(http_port),
         "--nats-port", str(free_port()), "--data-dir", str(data_dir), *args],
        cwd, env, log,
    )
    up = Up(proc=proc, log=log, data_dir=data_dir)
    try:
        dev_env = data_dir / "dev.env"

        async def dev_env_written() -> bool:  # this run's, not a previous run's
            values = read_env_file(dev_env)
            return values.get("RUNSTREAM_URL") == f"http://127.0.0.1:{http_port}"

        await _wait_for("dev.env", dev_env_written, proc, log, START_TIMEOUT_S)
        up.values = read_env_file(dev_env)
        up.started.update(descendants(proc.pid))
        async with httpx.AsyncClient(base_url=up.values["RUNSTREAM_URL"], timeout=15) as client:

            async def ready() -> bool:
                try:
                    return (await client.get("/readyz")).status_code == 200
                except httpx.HTTPError:
                    return False

            await _wait_for("/readyz 200", ready, proc, log, 30)
        yield up
        up.started.update(descendants(proc.pid))  # children restarted meanwhile, too
        proc.send_signal(signal.SIGINT)
        code = await asyncio.to_thread(proc.wait, STOP_TIMEOUT_S)
        output = up.output()
        assert code == 0, _tail(log)
        assert still_running(up.started) == []
        stopped = dict(re.findall(r"^(\S+?)\s*\| stopped \((-?\d+)\)$", output, re.M))
        assert stopped == {label: "0" for label in SERVICES}, output[-4000:]
        assert re.search(r"\| nats-server stopped \(0\)$", output, re.M), output[-4000:]
    finally:
        if proc.poll() is None:  # a failed assertion: still stop the stack as a user would
            up.started.update(descendants(proc.pid))
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.to_thread(proc.wait, STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for pid in still_running(up.started):  # never leave a stray server behind
            os.kill(int(pid.split(":")[0]), signal.SIGKILL)


SERVICES = ["projector", "gateway", "analysis-worker", "execution-worker", "chart-worker"]


async def test_runstream_up_serves_a_submit_cleans_up_on_schedule_and_stops_cleanly_on_sigint(
    tmp_path: Path, database_url: str
) -> None:
    env = _env(RUNSTREAM_DATABASE_URL=database_url, RUNSTREAM_CLEANUP_EVERY="1s")
    async with running_up(tmp_path, env) as up:
        values = up.values
        assert values["RUNSTREAM_DATABASE_URL"] == database_url  # the one given, as it is
        assert values["RUNSTREAM_NATS_URL"].startswith("nats://127.0.0.1:")
        assert "database: the one given" in up.output()
        token = values["RUNSTREAM_TOKEN"]
        secret = resolve_secret(None, up.data_dir)
        assert secret is not None
        claims = jwt.decode(token, secret, algorithms=["HS256"], issuer="runstream")
        assert claims["sub"] == "dev"
        assert "nats-server" in _commands(up.started)

        async with httpx.AsyncClient(base_url=values["RUNSTREAM_URL"], timeout=15.0) as client:
            auth = {"Authorization": f"Bearer {token}"}
            created = await client.post("/api/sessions", json={"title": "up test"},
                                        headers=auth)
            assert created.status_code == 201, created.text
            sid = created.json()["session_id"]
            submitted = await client.post(
                f"/api/sessions/{sid}/analyses",
                json={"question": "total revenue by region"}, headers=auth,
            )
            assert submitted.status_code == 202, submitted.text
            assert submitted.json()["status"] == "pending"
        # the periodic cleanup runs at start and then every second (nothing is 7 days old)
        await up.wait_output(r"^cleanup\s*\| nothing settled older than 7d$", count=2)


async def test_runstream_up_uses_a_runstream_database_of_its_own_on_the_local_server(
    tmp_path: Path, database_url: str
) -> None:
    local = await asyncio.to_thread(PostgresCluster().start)  # "the machine's Postgres"
    try:
        server = f"postgresql://postgres@127.0.0.1:{local.port}"
        # A plain DATABASE_URL (the test suites') does not count: `up` never uses it.
        env = _env(DATABASE_URL=database_url, RUNSTREAM_POSTGRES_SERVER=server,
                   RUNSTREAM_CLEANUP_EVERY="off")
        async with running_up(tmp_path, env) as up:
            assert up.values["RUNSTREAM_DATABASE_URL"] == f"{server}/runstream"
            assert f"database: runstream on the Postgres at 127.0.0.1:{local.port} (created)" \
                in up.output()
        conn = await asyncpg.connect(f"{server}/postgres")
        try:  # the server's own `postgres` database was left alone
            assert not await conn.fetchval(
                "SELECT 1 FROM pg_namespace WHERE nspname = 'runstream'")
        finally:
            await conn.close()
        conn = await asyncpg.connect(f"{server}/runstream")
        try:
            assert await conn.fetchval("SELECT count(*) FROM runstream.projection_checkpoints") \
                is not None
        finally:
            await conn.close()
        # A second run finds the database and keeps it.
        (tmp_path / "up.log").unlink()
        async with running_up(tmp_path, env) as up:
            assert up.values["RUNSTREAM_DATABASE_URL"] == f"{server}/runstream"
            assert "(created)" not in up.output()
    finally:
        await asyncio.to_thread(local.cleanup)


async def test_runstream_up_starts_a_cluster_of_its_own_when_no_postgres_answers(
    tmp_path: Path,
) -> None:
    nobody = free_port()
    # Postgres refuses to run as root: as root its folder belongs to the postgres user,
    # which must be able to reach it (pytest's tmp_path is private to root).
    home = Path(tempfile.mkdtemp(prefix="rs-up-"))
    os.chmod(home, 0o755)
    try:
        env = _env(RUNSTREAM_POSTGRES_SERVER=f"postgresql://postgres@127.0.0.1:{nobody}",
                   RUNSTREAM_CLEANUP_EVERY="off")
        async with running_up(tmp_path, env, data_dir=home / ".runstream") as up:
            dsn = up.values["RUNSTREAM_DATABASE_URL"]
            assert dsn.endswith("/runstream") and f":{nobody}/" not in dsn
            assert f"no Postgres answers at 127.0.0.1:{nobody}" in up.output()
            assert "database: runstream in the cluster in" in up.output()
            assert (home / ".runstream" / "pg" / "data" / "PG_VERSION").exists()
        assert re.search(r"\| postgres stopped \(0\)$", up.output(), re.M), up.output()[-3000:]
        # A shell that sourced that run's dev.env names its cluster, stopped now: `up`
        # chooses again (and reuses the cluster) instead of refusing the URL.
        (tmp_path / "up.log").unlink()
        env["RUNSTREAM_DATABASE_URL"] = dsn
        async with running_up(tmp_path, env, data_dir=home / ".runstream") as again:
            assert "is the last run's (from dev.env); choosing again" in again.output()
            assert again.values["RUNSTREAM_DATABASE_URL"].endswith("/runstream")
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_up_help_names_each_flags_default_and_environment_variable() -> None:
    out = subprocess.run([str(RUNSTREAM), "up", "--help"], capture_output=True, text=True,
                         check=True, env={**os.environ, "COLUMNS": "200"}).stdout
    flags = {
        "--http-port PORT": ("RUNSTREAM_HTTP_PORT", "8000, or a free port when it is taken"),
        "--nats-port PORT": ("RUNSTREAM_NATS_PORT", "4222, or a free port when it is taken"),
        "--database-url URL": ("RUNSTREAM_DATABASE_URL", "the runstream database on"),
        "--postgres-server URL": ("RUNSTREAM_POSTGRES_SERVER",
                                  "postgresql://postgres@127.0.0.1:5432"),
        "--data-dir DIR": ("RUNSTREAM_DATA_DIR", ".runstream"),
        "--ready-timeout SECONDS": ("RUNSTREAM_READY_TIMEOUT_S", "90"),
        "--cleanup-every DURATION": ("RUNSTREAM_CLEANUP_EVERY", "1h"),
        "--cleanup-older-than DURATION": ("RUNSTREAM_CLEANUP_OLDER_THAN", "7d"),
        "--projectors N": ("RUNSTREAM_PROJECTORS", "1"),
        "--gateways N": ("RUNSTREAM_GATEWAY_WORKERS", "1"),
    }
    entries = re.split(r"\n  (?=--)", out.split("Options:", 1)[1])
    for flag, (variable, default) in flags.items():
        entry = " ".join(next(e for e in entries if e.startswith(flag)).split())
        assert f"env var: {variable}" in entry, entry
        assert "default: " in entry and default in entry, entry
    assert not re.search(r"<(bool|int|str|float|path)>", out), out
