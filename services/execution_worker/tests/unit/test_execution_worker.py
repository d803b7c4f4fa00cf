"""The execution worker's handler on a real JetStream: result, failure, cancel, stale work."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from typing import Any

import pytest

from runstream.bus import (
    Bus,
    Delivery,
    Retry,
    SessionAggregate,
    delete_dataset,
    put_dataset,
    read_subject,
)
from runstream.bus.dataset_cache import digest_of
from runstream.contracts import (
    EVENT_MAX_BYTES,
    AnalysisSettled,
    CancelRequested,
    ColumnHint,
    DatasetRef,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionStarted,
    LogAppended,
    ResultShape,
    ScriptGenerated,
    StepCompleted,
    StepFailed,
    StepStarted,
    decode,
    encode,
    new_id,
    utcnow,
)
from runstream.execution_worker.settings import ExecutionWorkerSettings
from runstream.execution_worker.worker import ExecutionWorker
from runstream.pipeline import run_pipeline_worker
from runstream.testing import wait_until

CSV = b"region,revenue\nNorth,10\nSouth,20\nNorth,30\n"


def settings(bus: Bus, **kw: Any) -> ExecutionWorkerSettings:
    s = bus.settings
    return ExecutionWorkerSettings(
        nats_url=s.url,
        stream=s.stream,
        prefix=s.prefix,
        datasets_bucket=s.datasets_bucket,
        **kw,
    )


async def locked_message(bus: Bus, ttl_s: float | None = None) -> tuple[str, str]:
    """A session whose lock is held by a new analysis message."""
    sid, mid = new_id(), new_id()
    sessions = SessionAggregate(bus, lock_ttl_s=ttl_s)
    await sessions.create(sid, owner="o")
    await sessions.request_analysis(
        sid, owner="o", question="q", message_id=mid, user_message_id=new_id()
    )
    return sid, mid


async def script_delivery(
    bus: Bus, sid: str, mid: str, sql: str, data: bytes = CSV, **extra: Any
) -> Delivery:
    await publish_script(bus, sid, mid, sql, data, **extra)
    psub = await bus.js.pull_subscribe(
        bus.subjects.message(sid, mid, "script_generated"), stream=bus.stream
    )
    [msg] = await psub.fetch(1, timeout=5)
    await psub.unsubscribe()
    return Delivery(msg)


async def publish_script(
    bus: Bus, sid: str, mid: str, sql: str, data: bytes = CSV, **extra: Any
) -> None:
    await put_dataset(bus, f"obj-{sid}", data)
    await bus.publish(
        ScriptGenerated(
            event_id=new_id(),
            at=utcnow(),
            session_id=sid,
            message_id=mid,
            sql=sql,
            explanation="e",
            planner="test",
            question="q",
            dataset=DatasetRef(
                dataset_id="d1", name="sales.csv", format="csv", object_name=f"obj-{sid}"
            ),
            **extra,
        )
    )


async def events_of(bus: Bus, sid: str) -> list[Any]:
    return [decode(m.data) for m in await read_subject(bus, bus.subjects.session_all(sid))]


async def test_a_script_runs_in_the_sandbox_and_its_result_is_published(bus: Bus):
    sid, mid = await locked_message(bus)
    delivery = await script_delivery(
        bus, sid, mid, "SELECT region, sum(revenue) AS total FROM data GROUP BY 1 ORDER BY 1"
    )
    await ExecutionWorker(bus, settings(bus)).handle(delivery)
    events = await events_of(bus, sid)
    [started] = [e for e in events if isinstance(e, StepStarted)]
    assert (started.step, started.index, started.total) == ("execute", 4, 5)
    [limits] = [e.limits for e in events if isinstance(e, ExecutionStarted)]
    assert limits["timeout_s"] == 30.0
    [result] = [e for e in events if isinstance(e, ExecutionCompleted)]
    assert result.rows == [["North", 40], ["South", 20]] and result.row_count == 2
    assert [c.name for c in result.columns] == ["region", "total"]
    assert "North" in result.markdown
    assert result.display_rows == [["North", "40"], ["South", "20"]]
    assert any(isinstance(e, StepCompleted) and e.step == "execute" for e in events)
    logs = [e.text for e in events if isinstance(e, LogAppended)]
    assert logs[0] == "Step 4/5: running the query…"
    assert not any(isinstance(e, AnalysisSettled) for e in events)


async def test_the_result_carries_its_display_form_and_the_plans_reading(bus: Bus):
    sid, mid = await locked_message(bus)
    shape = ResultShape(columns=[
        ColumnHint(name="region", role="dimension"),
        ColumnHint(name="share", role="measure", percent=True),
    ], value="share")  # fmt: skip
    delivery = await script_delivery(
        bus, sid, mid,
        "SELECT region, 100.0 * sum(revenue) / (SELECT sum(revenue) FROM data) AS share "
        "FROM data GROUP BY 1 ORDER BY 1",
        interpretation="Share of revenue for each region.", shape=shape,
    )  # fmt: skip
    await ExecutionWorker(bus, settings(bus)).handle(delivery)
    [result] = [e for e in await events_of(bus, sid) if isinstance(e, ExecutionCompleted)]
    # 40 of 60 and 20 of 60, written out: 66.666…% and 33.333…%.
    assert result.rows == [["North", pytest.approx(200 / 3)], ["South", pytest.approx(100 / 3)]]
    assert result.display_rows == [["North", "66.7%"], ["South", "33.3%"]]
    assert [f.kind for f in result.formats] == ["text", "percent"]
    assert result.interpretation == "Share of revenue for each region."
    assert result.shape == shape
    assert "| North | 66.7% |" in result.markdown


async def test_a_result_too_big_for_one_event_is_cut_and_marked_truncated(bus: Bus):
    sid, mid = await locked_message(bus)
    delivery = await script_delivery(
        bus, sid, mid, "SELECT i, repeat('x', 4000) AS t FROM range(400) AS r(i)"
    )
    await ExecutionWorker(bus, settings(bus)).handle(delivery)
    [result] = [e for e in await events_of(bus, sid) if isinstance(e, ExecutionCompleted)]
    assert result.row_count == 400 and result.truncated
    assert 0 < len(result.rows) == len(result.display_rows) < 400
    assert len(encode(result)) <= EVENT_MAX_BYTES


async def test_a_failing_script_fails_the_step_and_settles_the_analysis_failed(bus: Bus):
    sid, mid = await locked_message(bus)
    delivery = await script_delivery(bus, sid, mid, "SELECT nope FROM data")
    await ExecutionWorker(bus, settings(bus)).handle(delivery)
    events = await events_of(bus, sid)
    [failed] = [e for e in events if isinstance(e, ExecutionFailed)]
    assert failed.kind == "sql"
    [step] = [e for e in events if isinstance(e, StepFailed)]
    assert step.step == "execute" and step.code == "execution_sql"
    settled = events[-1]
    assert isinstance(settled, AnalysisSettled) and settled.status == "failed"
    assert settled.error is not None and settled.error.step == "execute"


async def test_questions_about_one_file_read_its_bytes_once_whatever_its_name(bus: Bus):
    """Each session stores the file under its own object name; the bytes are the same."""
    worker = ExecutionWorker(bus, settings(bus))
    for _ in range(3):
        sid, mid = await locked_message(bus)
        await worker.handle(await script_delivery(bus, sid, mid, "SELECT count(*) FROM data"))
        [result] = [e for e in await events_of(bus, sid) if isinstance(e, ExecutionCompleted)]
        assert result.rows == [[3]]
    assert worker.datasets.fetches == 1


async def test_a_dataset_deleted_after_its_bytes_were_cached_is_no_longer_stored(bus: Bus):
    worker = ExecutionWorker(bus, settings(bus))
    sid, mid = await locked_message(bus)
    await worker.handle(await script_delivery(bus, sid, mid, "SELECT 1"))
    sid, mid = await locked_message(bus)
    delivery = await script_delivery(bus, sid, mid, "SELECT 1")  # the same bytes again
    await delete_dataset(bus, f"obj-{sid}")
    await worker.handle(delivery)
    events = await events_of(bus, sid)
    [failed] = [e for e in events if isinstance(e, ExecutionFailed)]
    assert failed.error == "dataset sales.csv is no longer stored"
    assert not any(isinstance(e, ExecutionStarted | ExecutionCompleted) for e in events)


async def test_a_cache_bound_of_zero_reads_the_dataset_for_every_question(bus: Bus):
    worker = ExecutionWorker(bus, settings(bus, dataset_cache_bytes=0))
    for _ in range(2):
        sid, mid = await locked_message(bus)
        await worker.handle(await script_delivery(bus, sid, mid, "SELECT 1"))
    assert worker.datasets.fetches == 2 and len(worker.datasets) == 0


async def test_a_cancelled_message_is_not_executed(bus: Bus):
    sid, mid = await locked_message(bus)
    delivery = await script_delivery(bus, sid, mid, "SELECT 1")
    await bus.publish(
        CancelRequested(event_id=new_id(), at=utcnow(), session_id=sid, message_id=mid)
    )
    await SessionAggregate(bus).settle(sid, mid, "cancelled")
    await ExecutionWorker(bus, settings(bus)).handle(delivery)
    events = await events_of(bus, sid)
    assert not any(isinstance(e, StepStarted | ExecutionCompleted) for e in events)


async def test_cancel_while_running_kills_the_child_and_publishes_no_result(bus: Bus):
    sid, mid = await locked_message(bus)
    delivery = await script_delivery(
        bus,
        sid,
        mid,
        "SELECT count(*) FROM range(100000000) a, range(100000) b"
        " WHERE (a.range + b.range) % 7 = 3",
    )
    worker = ExecutionWorker(bus, settings(bus, sandbox_timeout_s=120.0))
    handling = asyncio.create_task(worker.handle(delivery))

    async def child() -> int | None:
        return worker.children.get(mid)

    pid = await wait_until(child, timeout=10, interval=0.01)
    await bus.publish(
        CancelRequested(event_id=new_id(), at=utcnow(), session_id=sid, message_id=mid)
    )
    await asyncio.wait_for(handling, 1.0)
    try:
        import os

        os.kill(pid, 0)
        alive = True
    except ProcessLookupError:
        alive = False
    assert not alive
    events = await events_of(bus, sid)
    assert not any(isinstance(e, ExecutionCompleted | StepCompleted) for e in events)


async def test_a_message_whose_lock_went_to_another_settles_expired(bus: Bus):
    sid, mid = await locked_message(bus, ttl_s=0.001)
    delivery = await script_delivery(bus, sid, mid, "SELECT 1")
    other = new_id()
    async def lapsed() -> bool:  # the 1 ms lock of `mid` lapses, as a 30 min one would
        return (await SessionAggregate(bus).load(sid)).active_lock(utcnow()) is None

    await wait_until(lapsed, timeout=5)
    await SessionAggregate(bus).request_analysis(
        sid, owner="o", question="q2", message_id=other, user_message_id=new_id()
    )
    await ExecutionWorker(bus, settings(bus)).handle(delivery)
    events = await events_of(bus, sid)
    settles = [e for e in events if isinstance(e, AnalysisSettled)]
    assert [(e.message_id, e.status) for e in settles] == [(mid, "expired")]
    assert settles[0].lock is not None and settles[0].lock.message_id == other
    assert not any(isinstance(e, ExecutionCompleted) for e in events)


# About a second of work: long enough to be killed mid-query, short enough to finish.
SLOW_SQL = ("SELECT count(*) AS pairs FROM range(9000) a, range(9000) b "
            "WHERE (a.range * 7 + b.range) % 13 = 5")


async def _kill_its_child(worker: ExecutionWorker, mid: str, delivery: Delivery) -> None:
    """Handle `delivery` while SIGKILLing its sandbox child from outside, as the OOM
    killer would; the handler must ask for a redelivery (Retry)."""
    handling = asyncio.create_task(worker.handle(delivery))

    async def child() -> int | None:
        return worker.children.get(mid)

    os.kill(await wait_until(child, timeout=10, interval=0.01), signal.SIGKILL)
    with pytest.raises(Retry):
        await asyncio.wait_for(handling, 10)


async def test_a_sandbox_killed_from_outside_is_retried_and_completes_once(bus: Bus):
    sid, mid = await locked_message(bus)
    delivery = await script_delivery(bus, sid, mid, SLOW_SQL)
    worker = ExecutionWorker(bus, settings(bus))
    await _kill_its_child(worker, mid, delivery)
    events = await events_of(bus, sid)
    assert not any(isinstance(e, ExecutionFailed | StepFailed | AnalysisSettled)
                   for e in events), "a kill from outside is not the query's failure"
    [warning] = [e for e in events if isinstance(e, LogAppended) and e.level == "warning"]
    assert "killed from outside" in warning.text and "attempt 1 of 4" in warning.text

    await worker.handle(delivery)  # the redelivery
    events = await events_of(bus, sid)
    assert len([e for e in events if isinstance(e, ExecutionCompleted)]) == 1
    assert len([e for e in events if isinstance(e, StepStarted)]) == 1, "deduplicated"
    assert not any(isinstance(e, AnalysisSettled) for e in events)


async def test_a_sandbox_killed_on_the_last_delivery_settles_failed_as_a_dead_letter(bus: Bus):
    sid, mid = await locked_message(bus)
    delivery = await script_delivery(bus, sid, mid, SLOW_SQL)
    await _kill_its_child(ExecutionWorker(bus, settings(bus, max_deliver=1)), mid, delivery)
    settled = (await events_of(bus, sid))[-1]
    assert isinstance(settled, AnalysisSettled) and settled.status == "failed"
    assert settled.error is not None and settled.error.code == "max_deliveries"
    assert settled.dead_letter is not None and settled.dead_letter.deliveries == 1


# A CSV of mixed types, NULLs (empty fields) and text that needs quoting.
MIXED = (
    b"id,day,price,flag,note\n"
    b'1,2024-01-31,12.50,true,"a, ""quoted"" b"\n'
    b"2,,3.1,,plain\n"
    b"3,1999-12-31,,false,\n"
)
EVERYTHING = "SELECT * FROM data ORDER BY id"


async def ask(worker: ExecutionWorker, bus: Bus, sql: str, data: bytes) -> ExecutionCompleted:
    sid, mid = await locked_message(bus)
    await worker.handle(await script_delivery(bus, sid, mid, sql, data))
    [result] = [e for e in await events_of(bus, sid) if isinstance(e, ExecutionCompleted)]
    return result


def _answer(e: ExecutionCompleted) -> tuple[Any, ...]:
    return (e.columns, e.rows, e.row_count, e.markdown, e.display_rows)


def on_disk(path: str) -> bool:
    return os.path.exists(path)


def disk_files(directory: str) -> int:
    return len(os.listdir(directory))


def disk_bytes(directory: str | None) -> int:
    assert directory is not None
    return sum(os.path.getsize(os.path.join(directory, f)) for f in os.listdir(directory))


def spoil(path: str) -> None:
    with open(path, "wb") as f:
        f.write(b"not parquet at all")


def _copy_of(worker: ExecutionWorker, data: bytes) -> str | None:
    return worker.parquet.path_of(digest_of(data))


async def test_a_second_question_on_one_csv_loads_its_parquet_copy(bus: Bus):
    worker = ExecutionWorker(bus, settings(bus))
    first = await ask(worker, bus, EVERYTHING, MIXED)
    copy = _copy_of(worker, MIXED)
    assert copy is not None and on_disk(copy), "the first query wrote the copy"
    assert (worker.parquet.written, worker.parquet_loads) == (1, 0)
    second = await ask(worker, bus, EVERYTHING, MIXED)
    assert (worker.parquet.written, worker.parquet_loads) == (1, 1)
    assert _answer(second) == _answer(first)
    assert [c.type for c in first.columns] == ["BIGINT", "DATE", "DOUBLE", "BOOLEAN", "VARCHAR"]
    assert first.rows[0][4] == 'a, "quoted" b' and first.rows[1][1] is None
    grouped = "SELECT flag, count(*) AS n, sum(price) AS s FROM data GROUP BY 1 ORDER BY 1"
    from_parquet = await ask(worker, bus, grouped, MIXED)
    assert worker.parquet_loads == 2
    from_csv = await ask(ExecutionWorker(bus, settings(bus, parquet_cache_bytes=0)), bus,
                         grouped, MIXED)
    assert _answer(from_parquet) == _answer(from_csv)


async def test_a_parquet_bound_of_zero_always_loads_the_csv(bus: Bus):
    worker = ExecutionWorker(bus, settings(bus, parquet_cache_bytes=0))
    for _ in range(2):
        assert (await ask(worker, bus, "SELECT count(*) FROM data", MIXED)).rows == [[3]]
    assert (worker.parquet.written, worker.parquet_loads, len(worker.parquet)) == (0, 0, 0)
    assert worker.parquet.directory is None, "not even a directory is made"


def _numbers(seed: int) -> bytes:
    return ("n\n" + "".join(f"{seed * 1000 + i}\n" for i in range(50))).encode()


async def test_parquet_copies_are_evicted_least_recently_used_by_bytes(bus: Bus):
    sizing = ExecutionWorker(bus, settings(bus))
    await ask(sizing, bus, "SELECT 1", _numbers(0))
    one = sizing.parquet.held_bytes
    sizing.parquet.close()
    a, b, c = _numbers(1), _numbers(2), _numbers(3)
    worker = ExecutionWorker(bus, settings(bus, parquet_cache_bytes=one * 5 // 2))
    for data in (a, b):
        await ask(worker, bus, "SELECT 1", data)
    copy_b = _copy_of(worker, b)
    assert len(worker.parquet) == 2 and copy_b is not None
    await ask(worker, bus, "SELECT 1", a)  # a is now the most recently used
    await ask(worker, bus, "SELECT 1", c)
    assert _copy_of(worker, b) is None and not on_disk(copy_b), "b evicted, file gone"
    assert _copy_of(worker, a) is not None and _copy_of(worker, c) is not None
    assert worker.parquet.held_bytes <= worker.parquet.max_bytes
    assert disk_bytes(worker.parquet.directory) == worker.parquet.held_bytes, "counted = on disk"
    worker.parquet.close()


async def test_a_copy_that_cannot_be_written_leaves_every_query_correct(bus: Bus):
    worker = ExecutionWorker(bus, settings(bus))
    expected = _answer(await ask(worker, bus, EVERYTHING, MIXED))
    directory = worker.parquet.directory
    assert directory is not None and len(worker.parquet) == 1
    shutil.rmtree(directory)  # the copy vanishes, and no new one can be written
    assert _answer(await ask(worker, bus, EVERYTHING, MIXED)) == expected
    assert (len(worker.parquet), worker.parquet.written, worker.parquet_loads) == (0, 1, 0)
    other = await ask(worker, bus, "SELECT count(*) FROM data", _numbers(7))
    assert other.rows == [[50]] and len(worker.parquet) == 0


async def test_an_unreadable_copy_is_dropped_and_the_query_answered_from_the_csv(bus: Bus):
    worker = ExecutionWorker(bus, settings(bus))
    expected = _answer(await ask(worker, bus, EVERYTHING, MIXED))
    copy = _copy_of(worker, MIXED)
    assert copy is not None
    spoil(copy)
    assert _answer(await ask(worker, bus, EVERYTHING, MIXED)) == expected
    assert worker.parquet_loads == 0 and worker.parquet.written == 2, "dropped, rewritten"
    renewed = _copy_of(worker, MIXED)
    assert renewed is not None and renewed != copy and not on_disk(copy)
    assert _answer(await ask(worker, bus, EVERYTHING, MIXED)) == expected
    assert worker.parquet_loads == 1
    worker.parquet.close()


async def test_concurrent_first_questions_on_one_csv_write_one_copy(bus: Bus):
    worker = ExecutionWorker(bus, settings(bus, concurrency=4))
    deliveries = []
    for _ in range(4):
        sid, mid = await locked_message(bus)
        deliveries.append((sid, await script_delivery(bus, sid, mid, EVERYTHING, MIXED)))
    await asyncio.gather(*(worker.handle(d) for _, d in deliveries))
    answers = set()
    for sid, _ in deliveries:
        [result] = [e for e in await events_of(bus, sid) if isinstance(e, ExecutionCompleted)]
        answers.add(repr(_answer(result)))
    assert len(answers) == 1
    assert worker.parquet.written == 1 and len(worker.parquet) == 1
    directory = worker.parquet.directory
    assert directory is not None and disk_files(directory) == 1, "no stray part files"
    worker.parquet.close()


async def test_the_running_worker_deletes_its_parquet_copies_when_it_stops(bus: Bus):
    s = settings(bus)
    stop, ready = asyncio.Event(), asyncio.Event()
    workers: list[ExecutionWorker] = []
    task = asyncio.create_task(run_pipeline_worker(
        "execution-worker", s, ExecutionWorker.builder(s, out=workers), stop, ready))
    try:
        await asyncio.wait_for(ready.wait(), 30)
        [worker] = workers
        sid, mid = await locked_message(bus)
        await publish_script(bus, sid, mid, EVERYTHING, MIXED)

        async def completed() -> bool:
            return any(isinstance(e, ExecutionCompleted) for e in await events_of(bus, sid))

        await wait_until(completed, timeout=30)
        directory = worker.parquet.directory
        assert directory is not None and disk_files(directory) == 1
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert not on_disk(directory)
