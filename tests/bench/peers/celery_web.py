"""The Celery side's web app, in the browser's path: submit, poll, and a pub/sub -> SSE bridge.

`python -m tests.bench.peers.celery_web` serves it with uvicorn (one process, uvloop and
httptools, as Runstream's gateway) on PEERS_HTTP_PORT, on the same framework as the
gateway (Litestar):

- `POST /jobs {question, dataset_id}` -> 202 `{job_id}`: `apply_async` of the task, in a
  worker thread (the Celery client is synchronous);
- `GET /jobs/{id}` -> `{state, complete, steps, result?}`: what celery-progress's view
  answers, from one read of the result backend (`backend.get_task_meta`);
- `GET /jobs/{id}/events` -> SSE: the bridge. One pattern subscription (`progress:*`)
  for the whole process fans messages out to the streams of each task. A stream first
  registers, then reads the backend's meta (so a step published before it connected is
  not lost), sends those steps, then forwards live ones it has not sent yet;
  `event: done` when the task's `{"final": ...}` arrives (or the backend already has a
  final state), then the response ends.

The dataset the jobs read is described by the JSON file PEERS_DATASET (path, schema,
sample rows: what an upload would have stored); any `dataset_id` names it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import uvicorn
from litestar import Litestar, get, post
from litestar.response import Stream

from tests.bench.peers.celery_app import TASK, progress_messages
from tests.bench.peers.celery_app import app as celery

FINAL_STATES = {"SUCCESS", "FAILURE", "REVOKED"}
DATASET: dict[str, Any] = json.loads(Path(os.environ.get("PEERS_DATASET", "/dev/null")).read_text()
                                     or "{}")


class Bridge:
    """One Redis pub/sub connection for the process; frames go to per-task queues."""

    def __init__(self, url: str) -> None:
        self.redis = aioredis.from_url(url)
        self.streams: dict[str, set[asyncio.Queue[dict[str, Any]]]] = defaultdict(set)
        self.subscribed = asyncio.Event()

    async def run(self) -> None:
        async for job, data in progress_messages(self.redis, self.subscribed):
            for queue in self.streams.get(job, ()):
                queue.put_nowait(data)

    def register(self, job: str) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.streams[job].add(queue)
        return queue

    def unregister(self, job: str, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self.streams[job].discard(queue)
        if not self.streams[job]:
            del self.streams[job]


bridge: Bridge | None = None


@asynccontextmanager
async def lifespan(_: Litestar) -> AsyncIterator[None]:
    global bridge
    bridge = Bridge(os.environ.get("PEERS_REDIS_URL", "redis://127.0.0.1:6379/11"))
    task = asyncio.create_task(bridge.run())
    await asyncio.wait_for(bridge.subscribed.wait(), 10)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await bridge.redis.aclose()


@get("/healthz", sync_to_thread=False)
def healthz() -> dict[str, bool]:
    return {"ok": bridge is not None and bridge.subscribed.is_set()}


@post("/jobs", status_code=202, sync_to_thread=True)
def submit(data: dict[str, Any]) -> dict[str, str]:
    job = {**DATASET, "dataset_id": data["dataset_id"], "question": data["question"]}
    result = celery.send_task(TASK, args=[job])
    return {"job_id": str(result.id)}


def _steps(meta: dict[str, Any]) -> list[dict[str, Any]]:
    info = meta.get("result")
    return list(info.get("steps", [])) if isinstance(info, dict) else []


@get("/jobs/{job_id:str}", sync_to_thread=True)
def progress(job_id: str) -> dict[str, Any]:
    meta = celery.backend.get_task_meta(job_id)
    state = meta["status"]
    body: dict[str, Any] = {"state": state, "complete": state in FINAL_STATES,
                            "steps": _steps(meta)}
    if state == "SUCCESS":
        body["result"] = meta["result"]
    elif state == "FAILURE":
        body["error"] = repr(meta["result"])
    return body


def _frame(event: str, data: dict[str, Any]) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (event.encode(), json.dumps(data).encode())


@get("/jobs/{job_id:str}/events")
async def events(job_id: str) -> Stream:
    assert bridge is not None
    queue = bridge.register(job_id)  # first, so nothing published from now on is missed

    async def body() -> AsyncIterator[bytes]:
        try:
            yield b"retry: 1000\n\n"
            meta = await asyncio.to_thread(celery.backend.get_task_meta, job_id)
            info = meta["result"] if isinstance(meta.get("result"), dict) else {}
            run = info.get("run")
            frames = [_frame("step", s) for s in _steps(meta)]
            sent = len(frames)  # steps are numbered 1.. within a run
            if meta["status"] in FINAL_STATES:
                frames.append(_frame("done", {"final": meta["status"]}))
            if frames:
                yield b"".join(frames)
            if meta["status"] in FINAL_STATES:
                return
            while True:
                msg = await queue.get()
                if "final" in msg:
                    yield _frame("done", msg)
                    return
                if msg["run"] != run:  # the task started over (a redelivery): so does the list
                    run, sent = msg["run"], 0
                if msg["index"] > sent:
                    sent = msg["index"]
                    yield _frame("step", msg)
        finally:
            bridge.unregister(job_id, queue)

    return Stream(body(), media_type="text/event-stream",
                  headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def create_app() -> Litestar:
    return Litestar([healthz, submit, progress, events], lifespan=[lifespan])


def main() -> None:
    uvicorn.run(create_app(), host="127.0.0.1", port=int(os.environ["PEERS_HTTP_PORT"]),
                log_level="warning", access_log=False, timeout_graceful_shutdown=5)


if __name__ == "__main__":
    main()
