"""Sandbox child processes: how one starts and dies, and a bounded pool of spare ones.

A spare is a child started ahead of time (interpreter up, DuckDB imported, blocked on
stdin), which takes the start-up off a query's path. Each child still serves exactly one
query and is never reused. The pool keeps at most `size` spares, counting the ones still
starting, so no number of concurrent takers can grow it; a spare idle for `idle_s` is
killed and reaped; `close()` kills and reaps every spare. See docs/workers.md.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType

import structlog

logger = structlog.get_logger()

CHILD_MODULE = "runstream.execution_worker._child"
# The child answers with one JSON line: the whole (row-capped) result. asyncio's default
# line limit (64 KiB) would fail any wide result; the event limit cuts it down later.
RESULT_LINE_MAX = 64 * 1024 * 1024

Process = asyncio.subprocess.Process


async def spawn_child() -> Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        CHILD_MODULE,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_child_env(),
        start_new_session=True,
        limit=RESULT_LINE_MAX,
    )


async def kill_child(proc: Process) -> None:
    """SIGKILL the child and reap it, even if our own task is being cancelled again."""
    _sigkill(proc)
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.shield(proc.wait())


def _sigkill(proc: Process) -> None:
    if proc.returncode is None:  # once set, the child watcher has reaped it already
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


def _child_env() -> dict[str, str]:
    """A minimal environment: no credentials or proxies of the worker reach the child."""
    keep = ("PATH", "LANG", "LC_ALL", "PYTHONPATH", "VIRTUAL_ENV", "TMPDIR", "HOME")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["RS_SANDBOX_PARENT"] = str(os.getpid())  # the child dies with this process
    return env


@dataclass
class _Spare:
    proc: Process
    since: float  # loop time it began waiting


class SparePool:
    """At most `size` spare children of this event loop; use as an async context manager.

    `take()` returns a live spare if one is waiting (else starts a fresh child) and starts
    replacements up to the bound in the background. A spare that died while waiting is
    reaped and skipped, and replaced by that same refill: lazily, never leaked.
    """

    def __init__(
        self, size: int, idle_s: float, *, spawn: Callable[[], Awaitable[Process]] = spawn_child
    ) -> None:
        self.size = max(0, size)
        self.idle_s = idle_s
        self._spawn = spawn
        self._ready: collections.deque[_Spare] = collections.deque()
        self._starting: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False

    async def __aenter__(self) -> SparePool:
        if self.size:
            self._reaper = asyncio.create_task(self._reap_idle(), name="sandbox-spare-reaper")
            self._refill()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def pids(self) -> list[int]:
        """Pids of the spares waiting now (observability and tests)."""
        return [s.proc.pid for s in self._ready]

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pending(self) -> int:
        """Spares waiting plus spares starting: never more than `size`."""
        return len(self._ready) + len(self._starting)

    async def take(self) -> Process:
        proc: Process | None = None
        while self._ready and proc is None:
            spare = self._ready.popleft()
            if spare.proc.returncode is None:
                proc = spare.proc
            # else it died while waiting and is already reaped (returncode is only set
            # then): dropping it is all there is to do.
        self._refill()  # before a fresh start below, so both start side by side
        if proc is None:
            proc = await self._spawn()
        return proc

    def _refill(self) -> None:
        if self._closed:
            return
        for _ in range(self.size - self.pending):
            task = asyncio.create_task(self._start_one())
            self._starting.add(task)

    async def _start_one(self) -> None:
        task = asyncio.current_task()
        try:
            proc = await self._spawn()
        except Exception as exc:  # e.g. out of pids or fds: the next take starts its own
            logger.warning("sandbox.spare_start_failed", error=repr(exc))
            return
        finally:
            if task is not None:
                self._starting.discard(task)  # at once: `pending` never counts it twice
        if self._closed or len(self._ready) >= self.size:
            await kill_child(proc)
            return
        self._ready.append(_Spare(proc, asyncio.get_running_loop().time()))
        self._changed.set()

    async def _reap_idle(self) -> None:
        """Kill spares idle for `idle_s` and drop dead ones; sleep until the next is due."""
        loop = asyncio.get_running_loop()
        while True:
            self._changed.clear()  # first: a close() during the kills below still wakes us
            if self._closed:
                return
            now = loop.time()
            expired = [s for s in self._ready
                       if s.proc.returncode is not None or now - s.since >= self.idle_s]
            for spare in expired:
                self._ready.remove(spare)
            for spare in expired:
                logger.debug("sandbox.spare_reaped", pid=spare.proc.pid)
                await kill_child(spare.proc)
            # Not replaced here: an idle worker gives the memory back; the next take refills.
            due = min((s.since + self.idle_s for s in self._ready), default=None)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(due):
                    await self._changed.wait()

    async def close(self) -> None:
        """Kill and reap every spare, including those still starting; later takes only
        start fresh children."""
        self._closed = True
        self._changed.set()  # the reaper returns
        spares, self._ready = list(self._ready), collections.deque()
        for spare in spares:  # now, not in tasks a cancelled close() might never start
            _sigkill(spare.proc)
        starting = list(self._starting)  # each kills its own child once started: closed
        reaper, self._reaper = self._reaper, None
        await asyncio.gather(
            *(kill_child(s.proc) for s in spares), *starting,
            *([reaper] if reaper is not None else []), return_exceptions=True,
        )
