"""`runstream up` as a user runs it: a real subprocess, real nats-server and Postgres.

Starts the stack on free ports against a fresh database, waits for dev.env and the
gateway's /readyz, submits a question with the dev token, then sends SIGINT and checks
a clean exit and that no process it started is left behind.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import jwt
import pytest

from runstream.cli.settings import read_env_file
from runstream.cli.tokens import resolve_secret
from runstream.testing import free_port

ROOT = Path(__file__).resolve().parents[2]
RUNSTREAM = Path(sys.executable).parent / "runstream"
START_TIMEOUT_S = 120.0  # cold imports of every service on two shared cores
STOP_TIMEOUT_S = 20.0


def _has_main(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module + ".__main__") is not None
    except ModuleNotFoundError:
        return False


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


async def test_runstream_up_serves_a_submit_and_stops_cleanly_on_sigint(
    tmp_path: Path, database_url: str
) -> None:
    data_dir = tmp_path / ".runstream"
    http_port, nats_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNSTREAM_")}
    env["DATABASE_URL"] = database_url
    log = tmp_path / "up.log"
    gateway_installed = _has_main("runstream.gateway")
    proc = _start_up(
        [str(RUNSTREAM), "up", "--http-port", str(http_port), "--nats-port", str(nats_port),
         "--data-dir", str(data_dir)],
        tmp_path, env, log,
    )
    started: dict[int, int] = {}
    try:
        dev_env = data_dir / "dev.env"

        async def dev_env_written() -> bool:
            return dev_env.exists()

        await _wait_for("dev.env", dev_env_written, proc, log, START_TIMEOUT_S)
        values = read_env_file(dev_env)
        assert values["RUNSTREAM_URL"] == f"http://127.0.0.1:{http_port}"
        assert values["RUNSTREAM_NATS_URL"] == f"nats://127.0.0.1:{nats_port}"
        token = values["RUNSTREAM_TOKEN"]
        secret = resolve_secret(None, data_dir)
        assert secret is not None
        claims = jwt.decode(token, secret, algorithms=["HS256"], issuer="runstream")
        assert claims["sub"] == "dev"

        started.update(descendants(proc.pid))
        assert "nats-server" in _commands(started)

        if gateway_installed:
            base = values["RUNSTREAM_URL"]
            async with httpx.AsyncClient(base_url=base, timeout=15.0) as client:

                async def ready() -> bool:
                    try:
                        return (await client.get("/readyz")).status_code == 200
                    except httpx.HTTPError:
                        return False

                await _wait_for("/readyz 200", ready, proc, log, 30)
                auth = {"Authorization": f"Bearer {token}"}
                created = await client.post(
                    "/api/sessions", json={"title": "up test"}, headers=auth
                )
                assert created.status_code == 201, created.text
                sid = created.json()["session_id"]
                submitted = await client.post(
                    f"/api/sessions/{sid}/analyses",
                    json={"question": "total revenue by region"}, headers=auth,
                )
                assert submitted.status_code == 202, submitted.text
                assert submitted.json()["status"] == "pending"
        started.update(descendants(proc.pid))  # children restarted meanwhile, too

        proc.send_signal(signal.SIGINT)
        code = await asyncio.to_thread(proc.wait, STOP_TIMEOUT_S)
        assert code == 0, _tail(log)
        assert still_running(started) == []
        output = _tail(log, 10**7)
        assert "nats-server stopped" in output
        if gateway_installed:
            assert "gateway         | stopped" in output
    finally:
        if proc.poll() is None:  # a failed assertion: still stop the stack as a user would
            started.update(descendants(proc.pid))
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.to_thread(proc.wait, STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for pid in still_running(started):  # never leave a stray server behind
            os.kill(int(pid.split(":")[0]), signal.SIGKILL)
    if not gateway_installed:
        pytest.skip("up/down checked; HTTP part not run: runstream.gateway has no __main__ yet")
