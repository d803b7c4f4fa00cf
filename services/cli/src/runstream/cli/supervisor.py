"""Supervised child processes: prefixed output, restart with backoff, ordered stop.

Every child runs in its own session, so a Ctrl-C in the terminal reaches only `up`,
which then stops the children in order (services first, then NATS and Postgres).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field

from runstream.runtime.procs import terminate

_COLOURS = ["36", "35", "33", "32", "34", "91", "96", "93"]


class Output:
    """Writes `name | line` to stdout, one whole line at a time, coloured on a TTY."""

    def __init__(self, width: int = 16) -> None:
        self.width = width
        self.tty = sys.stdout.isatty()
        self._colours: dict[str, str] = {}

    def line(self, name: str, text: str) -> None:
        label = name.ljust(self.width)
        if self.tty:
            colour = self._colours.setdefault(name, _COLOURS[len(self._colours) % len(_COLOURS)])
            label = f"\033[{colour}m{label}\033[0m"
        sys.stdout.write(f"{label}| {text}\n")
        sys.stdout.flush()

    async def pump(self, name: str, stream: asyncio.StreamReader | None) -> None:
        if stream is None:
            return
        while True:
            raw = await stream.readline()
            if not raw:
                return
            self.line(name, raw.decode("utf-8", "replace").rstrip("\n"))


@dataclass
class Child:
    """One service, restarted with backoff whenever it exits before `up` stops."""

    name: str
    argv: Sequence[str]
    env: dict[str, str]
    output: Output
    backoff_s: Sequence[float] = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
    stable_after_s: float = 30.0  # a run this long resets the backoff
    stop_grace_s: float = 10.0
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0
    pids: list[int] = field(default_factory=list)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    async def _spawn(self) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            *self.argv, env=self.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.pids.append(proc.pid)
        return proc

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"child:{self.name}")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while not self._stopping.is_set():
            started = loop.time()
            self.proc = await self._spawn()
            if self._stopping.is_set():  # stop() arrived while we were spawning
                await terminate(self.proc, grace=self.stop_grace_s)
                break
            self.output.line(self.name, f"started (pid {self.proc.pid})")
            await self.output.pump(self.name, self.proc.stdout)
            code = await self.proc.wait()
            if self._stopping.is_set():
                break
            failures = 0 if loop.time() - started >= self.stable_after_s else failures + 1
            delay = self.backoff_s[min(max(failures - 1, 0), len(self.backoff_s) - 1)]
            self.restarts += 1
            self.output.line(self.name, f"exited with {code}; restarting in {delay:.1f}s")
            try:
                await asyncio.wait_for(self._stopping.wait(), delay)
            except TimeoutError:
                pass

    async def stop(self) -> None:
        self._stopping.set()
        if self.proc is not None:
            code = await terminate(self.proc, grace=self.stop_grace_s)
            self.output.line(self.name, f"stopped ({code})")
        if self._task is not None:
            await self._task


async def stop_all(children: Sequence[Child]) -> None:
    await asyncio.gather(*(child.stop() for child in children))


async def until_first(*waits: Awaitable[object]) -> None:
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


def child_env(base: dict[str, str] | None = None, **values: str) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env.update(values)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env

