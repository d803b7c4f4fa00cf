"""Clients in the browser's position, one per job, on raw sockets (a light load generator).

Every client stamps what it sees with the wall clock (`time.time()`) the moment the
bytes come off the socket; the workers stamp each step with the same clock when the
step's work is done, so "step visibility" is `seen - at` on one host.

- `RunstreamTab`: a tab on one session, as the web UI: `GET /api/sessions/{sid}/events
  ?after_seq=<as_of_seq>` is open before anything is asked; `step_completed` frames
  carry the step and the event's `at`; `analysis_settled` ends a job.
- `celery_sse_job`: `POST /jobs`, then `GET /jobs/{id}/events` (the pub/sub bridge)
  until `event: done`.
- `celery_poll_job`: `POST /jobs`, then `GET /jobs/{id}` at once and again 500 ms after
  each answer (celery-progress's client) until the state is final.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tests.bench.support import RawHttp

POLL_INTERVAL_S = 0.5  # celery-progress's default


class Chunked:
    """Incremental HTTP/1.1 chunked-transfer decoder."""

    def __init__(self) -> None:
        self.raw = bytearray()
        self.left = 0  # data bytes of the current chunk still to come
        self.skip = 0  # bytes of the CRLF after a chunk still to drop

    def feed(self, data: bytes) -> bytes:
        self.raw += data
        out = bytearray()
        while self.raw:
            if self.skip:
                n = min(self.skip, len(self.raw))
                del self.raw[:n]
                self.skip -= n
                continue
            if self.left:
                take = min(self.left, len(self.raw))
                out += self.raw[:take]
                del self.raw[:take]
                self.left -= take
                if not self.left:
                    self.skip = 2
                continue
            end = self.raw.find(b"\r\n")
            if end < 0:
                break
            self.left = int(bytes(self.raw[:end]).split(b";")[0] or b"0", 16)
            del self.raw[: end + 2]
            if self.left == 0:  # the last chunk: the stream is over
                break
        return bytes(out)


@dataclass
class StepSeen:
    step: str
    at: float  # the worker's stamp: the step's work is done
    seen: float  # the client read the frame / poll answer that first showed it
    run: str = ""  # Celery: which execution of the task reported it
    began: float | None = None  # the worker's stamp when the step's work started


@dataclass
class JobRecord:
    system: str
    job_id: str = ""
    sent: float = 0.0  # wall clock when the submit went out
    submit_s: float = 0.0  # submit answered - sent
    steps: list[StepSeen] = field(default_factory=list)
    done: float | None = None  # the client saw the job end
    state: str = ""  # completed / SUCCESS / FAILURE ...
    result: dict[str, Any] = field(default_factory=dict)  # rows, chart; filled afterwards
    starts: dict[str, float] = field(default_factory=dict)  # Runstream: step_started seen

    def started(self, step: str) -> float:
        return self.starts[step]

    @property
    def end_to_end_s(self) -> float:
        assert self.done is not None
        return self.done - self.sent


@dataclass
class Frame:
    seen: float
    id: int | None
    event: str
    data: str


class SseStream:
    """One SSE response read off a raw socket; `frames()` yields each frame as it lands."""

    def __init__(self, host: str, port: int, path: str, headers: dict[str, str]) -> None:
        self.host, self.port, self.path, self.headers = host, port, path, headers
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.decoder: Chunked | None = None

    async def open(self) -> SseStream:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        extra = "".join(f"{k}: {v}\r\n" for k, v in self.headers.items())
        self.writer.write(
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{extra}"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 30)
        status = head.split(b" ", 2)[1]
        if status != b"200":
            raise RuntimeError(f"GET {self.path}: HTTP {status.decode()}: {head[:300]!r}")
        if b"transfer-encoding: chunked" in head.lower():
            self.decoder = Chunked()
        return self

    async def frames(self) -> Any:
        assert self.reader is not None
        body = bytearray()
        while data := await self.reader.read(65536):
            seen = time.time()
            body += self.decoder.feed(data) if self.decoder is not None else data
            while (end := body.find(b"\n\n")) >= 0:
                raw = bytes(body[:end]).decode()
                del body[: end + 2]
                frame = Frame(seen=seen, id=None, event="message", data="")
                lines = []
                for line in raw.split("\n"):
                    name, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if name == "id":
                        frame.id = int(value)
                    elif name == "event":
                        frame.event = value
                    elif name == "data":
                        lines.append(value)
                if lines:
                    frame.data = "\n".join(lines)
                    yield frame

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()


def epoch(at: str) -> float:
    return datetime.fromisoformat(at).timestamp()


class RunstreamTab:
    """A browser tab on one Runstream session: its SSE stream, frames kept per message."""

    def __init__(self, host: str, port: int, token: str, session_id: str,
                 after_seq: int) -> None:
        self.sid = session_id
        self.stream = SseStream(host, port,
                                f"/api/sessions/{session_id}/events?after_seq={after_seq}",
                                {"Authorization": f"Bearer {token}"})
        self.frames: dict[str, list[tuple[Frame, dict[str, Any]]]] = defaultdict(list)
        self.settled: dict[str, asyncio.Future[None]] = {}
        self.last_id = 0
        self.order_errors = 0
        self.task: asyncio.Task[None] | None = None
        self.listener: Callable[[str, str], None] | None = None  # (message id, event type)

    def settled_future(self, mid: str) -> asyncio.Future[None]:
        return self.settled.setdefault(mid, asyncio.get_running_loop().create_future())

    async def open(self) -> RunstreamTab:
        await self.stream.open()
        self.task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        async for frame in self.stream.frames():
            if frame.id is not None:
                if frame.id <= self.last_id:
                    self.order_errors += 1
                self.last_id = frame.id
            if frame.event in ("reset", "message"):
                continue
            data = json.loads(frame.data)
            mid = data.get("message_id")
            if mid is None:
                continue
            self.frames[mid].append((frame, data))
            if self.listener is not None:
                self.listener(mid, frame.event)
            if frame.event == "analysis_settled":
                fut = self.settled_future(mid)
                if not fut.done():
                    fut.set_result(None)

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        await self.stream.close()

    async def job(self, http: RawHttp, dataset_id: str, question: str,
                  timeout: float) -> JobRecord:
        """Ask one question in this session and follow it to its settle."""
        rec = JobRecord(system="runstream")
        rec.sent = time.time()
        status, body = await http.request("POST", f"/api/sessions/{self.sid}/analyses",
                                          {"question": question, "dataset_id": dataset_id})
        rec.submit_s = time.time() - rec.sent
        assert status == 202, (status, body)
        rec.job_id = body["message_id"]
        await asyncio.wait_for(self.settled_future(rec.job_id), timeout)
        self.fill(rec)
        return rec

    def fill(self, rec: JobRecord) -> None:
        """Steps and the end, from the frames this tab received for the message."""
        began: dict[str, float] = {}
        for frame, data in self.frames[rec.job_id]:
            if frame.event == "step_completed":
                rec.steps.append(StepSeen(data["step"], epoch(data["at"]), frame.seen,
                                          began=began.get(data["step"])))
            elif frame.event == "step_started":
                rec.starts.setdefault(data["step"], frame.seen)
                began.setdefault(data["step"], epoch(data["at"]))
            elif frame.event == "analysis_settled":
                rec.done, rec.state = frame.seen, data["status"]


async def _celery_submit(http: RawHttp, system: str, dataset_id: str,
                         question: str) -> JobRecord:
    """`POST /jobs` to the Celery web app, timed: the record the job's client fills in."""
    rec = JobRecord(system=system)
    rec.sent = time.time()
    status, body = await http.request("POST", "/jobs",
                                      {"question": question, "dataset_id": dataset_id})
    rec.submit_s = time.time() - rec.sent
    assert status == 202, (status, body)
    rec.job_id = body["job_id"]
    return rec


async def celery_sse_job(http: RawHttp, host: str, port: int, dataset_id: str, question: str,
                         timeout: float) -> JobRecord:
    rec = await _celery_submit(http, "celery-sse", dataset_id, question)
    stream = await SseStream(host, port, f"/jobs/{rec.job_id}/events", {}).open()
    try:
        async with asyncio.timeout(timeout):
            async for frame in stream.frames():
                data = json.loads(frame.data)
                if frame.event == "step":
                    rec.steps.append(StepSeen(data["step"], data["at"], frame.seen, data["run"],
                                              data["began"]))
                elif frame.event == "done":
                    rec.done, rec.state = frame.seen, data["final"]
                    break
    finally:
        await stream.close()
    return rec


async def celery_poll_job(http: RawHttp, dataset_id: str, question: str,
                          timeout: float) -> JobRecord:
    rec = await _celery_submit(http, "celery-poll", dataset_id, question)
    seen: set[tuple[str, int]] = set()
    async with asyncio.timeout(timeout):
        while True:
            status, body = await http.request("GET", f"/jobs/{rec.job_id}")
            now = time.time()
            assert status == 200, (status, body)
            for s in body["steps"]:
                if (s["run"], s["index"]) not in seen:
                    seen.add((s["run"], s["index"]))
                    rec.steps.append(StepSeen(s["step"], s["at"], now, s["run"], s["began"]))
            if body["complete"]:
                rec.done, rec.state = now, body["state"]
                rec.result = body.get("result") or {}
                return rec
            await asyncio.sleep(POLL_INTERVAL_S)  # the client's poll interval, measured
