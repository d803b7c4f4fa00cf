"""Shared set-up for the worker pipeline suites: sessions with a real dataset, workers
running in-process on the test's bus, and the session's events read back in order."""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import duckdb

from runstream.bus import Bus, SessionAggregate, put_dataset, read_subject
from runstream.contracts import AnalysisSettled, Column, decode, new_id
from runstream.pipeline import MessageGuard

REGIONS = ["North", "South", "East", "West"]


def sales_csv(n: int = 200) -> bytes:
    lines = ["order_id,region,units,revenue"]
    for i in range(n):
        region = REGIONS[(i * 7) % 4]
        units = 1 + (i * 5) % 11
        lines.append(f"{i},{region},{units},{units * (3 + i % 5)}.5")
    return ("\n".join(lines) + "\n").encode()


def describe_csv(data: bytes) -> tuple[list[Column], list[list[Any]], int]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.csv"
        path.write_bytes(data)
        con = duckdb.connect()
        try:
            cur = con.execute(f"SELECT * FROM read_csv_auto('{path}')")
            columns = [Column(name=d[0], type=str(d[1])) for d in cur.description]
            rows = [list(r) for r in cur.fetchall()]
            sample, count = rows[:5], len(rows)
        finally:
            con.close()
    return columns, sample, count


async def session_with_csv(bus: Bus, data: bytes, *, name: str = "sales.csv") -> str:
    sid = new_id()
    sessions = SessionAggregate(bus)
    await sessions.create(sid, owner="alice", title="t")
    dataset_id = new_id()
    object_name = f"{sid}-{dataset_id}"
    await put_dataset(bus, object_name, data)
    columns, sample, count = describe_csv(data)
    await sessions.attach_dataset(
        sid, dataset_id=dataset_id, name=name, fmt="csv", object_name=object_name,
        size_bytes=len(data), row_count=count, columns=columns, sample_rows=sample,
    )
    return sid


async def ask(bus: Bus, sid: str, question: str) -> str:
    mid = new_id()
    await SessionAggregate(bus).request_analysis(
        sid, owner="alice", question=question, message_id=mid, user_message_id=new_id(),
    )
    return mid


async def wait_settled(bus: Bus, sid: str, mid: str, timeout: float = 20.0) -> AnalysisSettled:
    guard = MessageGuard(bus, sid, mid)
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        settled = await guard.settled()
        if settled is not None:
            return settled
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"{mid} not settled within {timeout}s")
        await asyncio.sleep(0.02)


async def session_events(bus: Bus, sid: str) -> list[Any]:
    """Every event of the session, in stream order."""
    return [decode(m.data) for m in await read_subject(bus, bus.subjects.session_all(sid))]


def worker_settings(cls: type, bus: Bus, **overrides: Any) -> Any:
    s = bus.settings
    base: dict[str, Any] = {
        "nats_url": s.url, "stream": s.stream, "prefix": s.prefix,
        "datasets_bucket": s.datasets_bucket, "backoff_s": (0.05, 0.1, 0.2),
    }
    return cls(**{**base, **overrides})


Runner = Callable[[asyncio.Event, asyncio.Event], Awaitable[None]]


@contextlib.asynccontextmanager
async def running(*runners: Runner) -> AsyncIterator[None]:
    """Start workers (`run_worker` partials), wait until each is consuming; stop them after."""
    stop = asyncio.Event()
    readies = [asyncio.Event() for _ in runners]
    tasks = [asyncio.create_task(r(stop, ready)) for r, ready in zip(runners, readies,
                                                                       strict=True)]
    try:
        all_ready = asyncio.ensure_future(asyncio.gather(*(r.wait() for r in readies)))
        await asyncio.wait([all_ready, *tasks], timeout=15, return_when=asyncio.FIRST_COMPLETED)
        all_ready.cancel()
        for task in tasks:
            if task.done():
                task.result()  # a worker that died on start-up fails the test here
        assert all(r.is_set() for r in readies), "workers did not start"
        yield
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 40)


class FakeChatCompletions:
    """A small OpenAI-compatible server: the first `stalls` requests never get an answer
    (the planner's timeout fires), later ones answer with a JSON plan: `sql`, or what
    `sql_for(question)` picks."""

    def __init__(self, *, stalls: int, sql: str,
                 sql_for: Callable[[str], str] | None = None) -> None:
        self.stalls = stalls
        self.sql = sql
        self.sql_for = sql_for
        self.requests = 0
        self._handlers: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}/v1"

    async def __aenter__(self) -> FakeChatCompletions:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.decode().split("\r\n"):
                if line.lower().startswith("content-length:"):
                    length = int(line.split(":", 1)[1])
            request = await reader.readexactly(length)
            self.requests += 1
            if self.requests <= self.stalls:
                await asyncio.Event().wait()  # never answers; the client times out
            sql = self.sql
            if self.sql_for is not None:
                # The planner's user message ends with "Question: <the question>".
                prompt = json.loads(request)["messages"][-1]["content"]
                sql = self.sql_for(prompt.rsplit("Question: ", 1)[-1])
            content = json.dumps({"sql": sql, "explanation": "average revenue per region"})
            body = json.dumps({
                "id": "chatcmpl-1", "object": "chat.completion", "model": "fake",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": content}}],
            }).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                         + body)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self._handlers.discard(task)
