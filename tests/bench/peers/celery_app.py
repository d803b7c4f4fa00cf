"""The Celery side: one task that runs the five steps and reports after each one.

`python -m celery -A tests.bench.peers.celery_app worker --pool prefork --concurrency 3`
runs it. Broker and result backend are the same Redis database (PEERS_REDIS_URL);
PEERS_ACKS_LATE and PEERS_REJECT_ON_WORKER_LOST (0/1) set `task_acks_late` and
`task_reject_on_worker_lost`; everything else is Celery's default (prefetch multiplier
4, visibility timeout 1 hour, JSON).

After each step the task records a timestamp and reports progress the two ways Celery
users do: `update_state(state="PROGRESS", meta=...)` into the result backend (what
celery-progress polls; the meta carries every step done so far, so a poller that misses
an intermediate state still sees every step), then a `PUBLISH` on the Redis channel
`progress:<task id>` (what a pub/sub bridge forwards). When the task has ended and its
result is stored, a `task_success` / `task_failure` handler publishes `{"final": state}`.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

from celery import Celery, Task
from celery.signals import task_failure, task_success

from tests.bench.peers.job import now as clock
from tests.bench.peers.job import step_chart, step_context, step_execute, step_plan

CHANNEL = "progress:"
TASK = "peers.analyse"


async def progress_messages(
    redis: Any, subscribed: asyncio.Event
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(task id, message) of every task's progress, from one pattern subscription on the
    async Redis client `redis`; `subscribed` is set once nothing published can be missed."""
    pubsub = redis.pubsub()
    await pubsub.psubscribe(CHANNEL + "*")
    subscribed.set()
    try:
        while True:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
            if msg is None or msg["type"] != "pmessage":
                continue
            yield msg["channel"].decode()[len(CHANNEL):], json.loads(msg["data"])
    finally:
        await pubsub.aclose()


def make_app(url: str, *, acks_late: bool = False, reject_on_worker_lost: bool = False) -> Celery:
    app = Celery("peers", broker=url, backend=url, set_as_current=False)
    app.conf.update(
        task_acks_late=acks_late,
        task_reject_on_worker_lost=reject_on_worker_lost,
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        worker_hijack_root_logger=False,
    )
    return app


def _flag(name: str) -> bool:
    return os.environ.get(name, "0") in ("1", "true", "yes")


app = make_app(
    os.environ.get("PEERS_REDIS_URL", "redis://127.0.0.1:6379/11"),
    acks_late=_flag("PEERS_ACKS_LATE"),
    reject_on_worker_lost=_flag("PEERS_REJECT_ON_WORKER_LOST"),
)


@app.task(bind=True, name=TASK)
def analyse(self: Task, job: dict[str, Any]) -> dict[str, Any]:
    run, pid = uuid.uuid4().hex[:12], os.getpid()  # one run = one execution of the task
    channel = CHANNEL + str(self.request.id)
    redis = self.backend.client
    steps: list[dict[str, Any]] = []

    began = clock()

    def report(step: str) -> None:
        nonlocal began
        at = clock()
        entry = {"step": step, "index": len(steps) + 1, "began": began, "at": at, "pid": pid,
                 "run": run}
        steps.append(entry)
        self.update_state(state="PROGRESS", meta={"steps": steps, "pid": pid, "run": run})
        redis.publish(channel, json.dumps(entry))
        began = clock()

    context = step_context(job)
    report("context")
    plan = step_plan(job, context)
    report("plan")
    report("script")  # the planner's SQL is the script: nothing more to do (as in Runstream)
    result = step_execute(job, plan)
    report("execute")
    chart = step_chart(plan, result)
    report("chart")
    return {
        "steps": steps, "pid": pid, "run": run, "sql": plan.sql,
        "columns": [{"name": c.name, "type": c.type} for c in result["columns"]],
        "rows": result["rows"], "chart": chart,
    }


def _publish_final(task: Task, task_id: str, state: str) -> None:
    task.backend.client.publish(CHANNEL + task_id, json.dumps({"final": state, "at": clock()}))


@task_success.connect
def _succeeded(sender: Task, **_: Any) -> None:
    _publish_final(sender, str(sender.request.id), "SUCCESS")


@task_failure.connect
def _failed(sender: Task, task_id: str, **_: Any) -> None:
    _publish_final(sender, task_id, "FAILURE")
