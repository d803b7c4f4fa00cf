"""Run one DuckDB SELECT over one dataset in a locked-down child process.

Layers, outermost first: a static pre-check (one statement, no file/extension/config
keywords), a child process with RLIMITs (address space, CPU, open files, file size),
DuckDB with external access, extension loading and temp files off and its
configuration locked, a parent-side wall clock that SIGKILLs the child, and
cancellation that SIGKILLs and reaps it. See docs/engine.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import tempfile
import time
from collections.abc import Callable
from typing import Any, Literal

import msgspec

from runstream.contracts import Column
from runstream.execution_worker.pool import SparePool, kill_child, spawn_child

# How the child's message starts when the dataset itself could not be loaded.
LOAD_FAILED = "the dataset could not be loaded"

SandboxErrorKind = Literal["sql", "timeout", "memory", "sandbox", "killed"]
Format = Literal["csv", "parquet"]


class SandboxLimits(msgspec.Struct, frozen=True, kw_only=True):
    memory_mb: int = 256
    threads: int = 1
    timeout_s: float = 10.0
    max_rows: int = 500
    cpu_s: int = 30


class SandboxResult(msgspec.Struct, frozen=True, kw_only=True):
    columns: list[Column]
    rows: list[list[Any]]
    row_count: int
    truncated: bool
    markdown: str
    duration_ms: int


class SandboxError(Exception):
    """A query that did not produce a result, and which of the reasons stopped it."""

    def __init__(self, kind: SandboxErrorKind, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind: SandboxErrorKind = kind
        self.message = message

    @property
    def retryable(self) -> bool:
        """`killed` says nothing about the query: run it again. The rest would recur."""
        return self.kind == "killed"

    @property
    def code(self) -> str:
        return f"execution_{self.kind}"


# Statement keywords that touch files, extensions or settings. DuckDB refuses them all
# once locked; refusing them here too is a second line and saves a process start.
_FORBIDDEN = re.compile(
    r"^\s*(ATTACH|DETACH|COPY|INSTALL|LOAD|FORCE|EXPORT|IMPORT|PRAGMA|SET|RESET|CALL|"
    r"CHECKPOINT|FORCE\s+CHECKPOINT|VACUUM|USE|CREATE|DROP|ALTER|INSERT|UPDATE|DELETE|"
    r"TRUNCATE|BEGIN|COMMIT|ROLLBACK|PREPARE|EXECUTE|UPDATE_EXTENSIONS)\b",
    re.IGNORECASE,
)
_LITERALS = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?\*/", re.DOTALL)


def precheck(sql: str) -> None:
    """Refuse anything but one SELECT/WITH statement, judged outside strings and comments."""
    bare = _LITERALS.sub(" ", sql)
    statements = [s for s in bare.split(";") if s.strip()]
    if not statements:
        raise SandboxError("sql", "the query is empty")
    if len(statements) > 1:
        raise SandboxError("sandbox", f"exactly one statement is allowed, got {len(statements)}")
    match = _FORBIDDEN.match(statements[0])
    if match:
        word = match.group(1).upper()
        raise SandboxError("sandbox", f"{word} statements are not allowed; send one SELECT")


async def run_sandboxed(
    *,
    data: bytes,
    fmt: Format,
    table_name: str,
    sql: str,
    limits: SandboxLimits,
    on_start: Callable[[int], Any] | None = None,
    on_running: Callable[[], Any] | None = None,
    pool: SparePool | None = None,
    source: str | None = None,
    copy_to: str | None = None,
) -> SandboxResult:
    """Run `sql` over `data` loaded as `table_name`; raise SandboxError if it does not finish.

    `on_start(pid)` is called once the child exists; `on_running()` once the data is
    loaded and the query itself starts. Cancelling the awaiting task SIGKILLs the child
    and reaps it before the CancelledError propagates. With a `pool` the child is one of
    its spares; without, a fresh one.

    `source`: a file of format `fmt` already on disk (the worker's Parquet copy) to load
    instead of `data`; it is left in place. `copy_to`: where the child also writes the
    loaded table as Parquet, before the lock-down; the file exists afterwards only if
    the copy was written whole (a failed copy never fails the query).
    """
    if fmt not in ("csv", "parquet"):
        raise SandboxError("sql", f"unsupported dataset format {fmt!r}")
    precheck(sql)
    started = time.monotonic()
    path = source
    try:
        if path is None:
            fd, path = tempfile.mkstemp(prefix="rs-dataset-", suffix=f".{fmt}")
            await asyncio.to_thread(_write_all, fd, data)
        request = {
            "path": path,
            "fmt": fmt,
            "table": table_name,
            "sql": sql,
            "limits": msgspec.to_builtins(limits),
            "copy_to": copy_to,
        }
        reply = await _run_child(
            json.dumps(request).encode(), limits, on_start, on_running, pool
        )
    finally:
        if path is not None and path != source:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    if not reply.get("ok"):
        raise SandboxError(reply.get("kind", "sandbox"), reply.get("message", "unknown error"))
    result = msgspec.convert(reply["result"], SandboxResult)
    wall_ms = int((time.monotonic() - started) * 1000)
    return msgspec.structs.replace(result, duration_ms=max(result.duration_ms, wall_ms))


def _write_all(fd: int, data: bytes) -> None:
    with os.fdopen(fd, "wb") as f:
        f.write(data)


async def _run_child(
    request: bytes,
    limits: SandboxLimits,
    on_start: Callable[[int], Any] | None,
    on_running: Callable[[], Any] | None,
    pool: SparePool | None,
) -> dict[str, Any]:
    proc = await pool.take() if pool is not None else await spawn_child()
    try:
        if on_start is not None:
            on_start(proc.pid)
        async with asyncio.timeout(limits.timeout_s):
            return await _converse(proc, request, on_running)
    except TimeoutError:
        await kill_child(proc)
        raise SandboxError(
            "timeout", f"the query did not finish within {limits.timeout_s:g} s"
        ) from None
    except BaseException:
        await kill_child(proc)
        raise


async def _converse(
    proc: asyncio.subprocess.Process, request: bytes, on_running: Callable[[], Any] | None
) -> dict[str, Any]:
    assert proc.stdin and proc.stdout and proc.stderr
    stderr_task = asyncio.ensure_future(proc.stderr.read())
    try:
        proc.stdin.write(request)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            await proc.stdin.drain()
        proc.stdin.close()
        last: dict[str, Any] | None = None
        while line := await proc.stdout.readline():
            message = json.loads(line)
            if message.get("phase") == "running":
                if on_running is not None:
                    on_running()
                continue
            last = message
        code = await proc.wait()
        stderr = await stderr_task
    finally:
        stderr_task.cancel()
    if last is not None:
        return last
    return _died(code, stderr.decode(errors="replace"))


def _died(code: int, stderr: str) -> dict[str, Any]:
    """The child exited without a verdict: read the cause from how it died."""
    tail = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    if code == -signal.SIGXCPU:
        return {"ok": False, "kind": "timeout", "message": "the query used up its CPU time"}
    if code == -signal.SIGXFSZ:
        return {"ok": False, "kind": "sandbox", "message": "the query tried to write a file"}
    if code == -signal.SIGKILL and "MemoryError" not in stderr and "bad_alloc" not in stderr:
        # Not ours (the wall clock and cancel kill before we get here) and not RLIMIT_AS
        # (that is a MemoryError, bad_alloc or a crash): something outside killed it, the
        # container's OOM killer reclaiming memory from the whole pod or an operator. The
        # query may be fine; failing it for good would blame it for its neighbours.
        return {"ok": False, "kind": "killed",
                "message": "the sandbox was killed from outside (SIGKILL)"}
    if code in (-signal.SIGSEGV, -signal.SIGABRT, -signal.SIGBUS) or (
        "MemoryError" in stderr or "bad_alloc" in stderr
    ):
        return {"ok": False, "kind": "memory", "message": f"the query ran out of memory ({tail})"}
    return {"ok": False, "kind": "sandbox", "message": f"the sandbox exited with {code}: {tail}"}
