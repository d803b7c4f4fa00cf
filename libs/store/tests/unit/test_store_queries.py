"""Read-model queries: JSON-ready dicts, each read at one snapshot with its as_of_seq."""

from __future__ import annotations

import asyncio
import time

import asyncpg

from libs.store.tests.unit import store_rows as rows
from runstream.store import ReadModels
from runstream.testing import wait_until


async def test_a_session_read_carries_its_lock_and_the_checkpoint(
    pool: asyncpg.Pool, read_models: ReadModels
) -> None:
    async with pool.acquire() as conn:
        await rows.session(conn, "s1", status="analyzing", active_message_id="m1")
        await rows.set_checkpoint(conn, 7)
    await rows.insert(
        pool, "session_locks", session_id="s1", message_id="m1", acquired_at=rows.T0,
        expires_at=rows.T0,
    )  # fmt: skip

    session = await read_models.get_session("s1")
    assert session is not None
    assert (session["status"], session["active_message_id"], session["as_of_seq"]) == (
        "analyzing",
        "m1",
        7,
    )
    assert session["lock"] == {"message_id": "m1", "acquired_at": rows.T0, "expires_at": rows.T0}
    assert await read_models.get_session("nope") is None


async def test_sessions_are_listed_per_owner_most_recent_first(
    pool: asyncpg.Pool, read_models: ReadModels
) -> None:
    async with pool.acquire() as conn:
        await rows.session(conn, "old", last_activity_at=rows.T0)
        await rows.session(conn, "new", last_activity_at=rows.T0.replace(year=2026))
        await rows.session(conn, "bob's", owner="bob")
    listed = await read_models.list_sessions("alice")
    assert [s["session_id"] for s in listed["sessions"]] == ["new", "old"]
    assert set(listed["sessions"][0]) >= {
        "status", "active_message_id", "has_notification", "last_activity_at",
    }  # fmt: skip
    assert listed["as_of_seq"] == 0


async def test_messages_list_oldest_first_with_results_and_charts(
    pool: asyncpg.Pool, read_models: ReadModels
) -> None:
    async with pool.acquire() as conn:
        await rows.session(conn, "s1")
        # Same created_at for a question and its answer: stream order decides.
        await rows.message(conn, "u1", "s1", 2, role="user", status="completed", created_at=rows.T0)
        await rows.message(
            conn,
            "a1",
            "s1",
            3,
            created_at=rows.T0,
            status="completed",
            result={"rows": [[1]], "row_count": 1},
        )
        await rows.message(conn, "u0", "s1", 0, role="user", status="completed")
    await rows.insert(
        pool, "charts", chart_id="c1", task_id="t1", message_id="a1", session_id="s1",
        kind="bar", spec={"mark": "bar"}, created_at=rows.T0, seq=9,
    )  # fmt: skip

    listed = await read_models.list_messages("s1")
    assert [m["message_id"] for m in listed["messages"]] == ["u0", "u1", "a1"]
    answer = listed["messages"][2]
    assert answer["result"] == {"rows": [[1]], "row_count": 1}
    assert [c["chart_id"] for c in answer["charts"]] == ["c1"]
    assert answer["charts"][0]["spec"] == {"mark": "bar"}


async def test_a_message_comes_with_ordered_steps_logs_and_charts(
    pool: asyncpg.Pool, read_models: ReadModels
) -> None:
    async with pool.acquire() as conn:
        await rows.message(
            conn, "m1", "s1", 1, error={"code": "x", "message": "y"}, script={"sql": "SELECT 1"}
        )
        for seq in (5, 3, 4):
            await rows.log(conn, "m1", seq, f"line {seq}")
        await rows.set_checkpoint(conn, 5)
    for idx, step in ((2, "plan"), (1, "context")):
        await rows.insert(
            pool,
            "message_steps",
            message_id="m1",
            step=step,
            session_id="s1",
            idx=idx,
            status="completed",
            last_seq=1,
        )

    message = await read_models.get_message("m1")
    assert message is not None
    assert [s["step"] for s in message["steps"]] == ["context", "plan"]
    assert [log["seq"] for log in message["logs"]] == [3, 4, 5]
    assert (message["error"], message["script"], message["charts"]) == (
        {"code": "x", "message": "y"},
        {"sql": "SELECT 1"},
        [],
    )
    assert message["as_of_seq"] == 5
    brief = await read_models.get_message("m1", details=False)
    assert brief is not None and "logs" not in brief
    assert await read_models.get_message("unknown") is None


async def test_logs_after_a_sequence_come_in_pages(
    pool: asyncpg.Pool, read_models: ReadModels
) -> None:
    async with pool.acquire() as conn:
        for seq in range(1, 8):
            await rows.log(conn, "m1", seq, f"line {seq}")
        await rows.log(conn, "other", 8, "not mine")
    page = await read_models.get_logs("m1", after_seq=2, limit=3)
    assert [log["seq"] for log in page["logs"]] == [3, 4, 5]
    assert page["has_more"] is True
    page = await read_models.get_logs("m1", after_seq=5, limit=3)
    assert ([log["text"] for log in page["logs"]], page["has_more"]) == (
        ["line 6", "line 7"],
        False,
    )


async def test_analysis_status_names_the_active_message_or_else_the_latest(
    pool: asyncpg.Pool, read_models: ReadModels
) -> None:
    async with pool.acquire() as conn:
        await rows.session(conn, "s1", status="analyzing", active_message_id="a2")
        await rows.message(conn, "a1", "s1", 1, status="completed")
        await rows.message(conn, "a2", "s1", 3, status="running")
        await rows.log(conn, "a2", 4, "working")
    status = await read_models.analysis_status("s1")
    assert status is not None
    assert (status["is_analyzing"], status["message_id"], status["status"]) == (
        True,
        "a2",
        "running",
    )
    assert [log["text"] for log in status["logs"]] == ["working"]

    await pool.execute("UPDATE sessions SET status = 'idle', active_message_id = NULL")
    await pool.execute("UPDATE messages SET status = 'completed' WHERE message_id = 'a2'")
    status = await read_models.analysis_status("s1")
    assert status is not None
    assert (status["is_analyzing"], status["message_id"], status["status"]) == (
        False,
        "a2",
        "completed",
    )
    assert await read_models.analysis_status("unknown") is None


async def test_analysis_status_carries_the_mean_duration_of_every_step(
    pool: asyncpg.Pool, read_models: ReadModels
) -> None:
    async with pool.acquire() as conn:
        await rows.session(conn, "s1")
    status = await read_models.analysis_status("s1")
    assert status is not None and status["step_estimates"] == {}
    await rows.insert(pool, "step_durations", step="plan", count=3, mean_ms=1234.6)
    await rows.insert(pool, "step_durations", step="execute", count=1, mean_ms=3100.2)
    status = await read_models.analysis_status("s1")
    assert status is not None
    assert status["step_estimates"] == {"execute": 3100, "plan": 1235}


async def test_charts_of_a_message_list_active_tasks_apart(
    pool: asyncpg.Pool, read_models: ReadModels
) -> None:
    for tid, status in (("t1", "completed"), ("t2", "running"), ("t3", "cancelled")):
        await rows.insert(
            pool,
            "chart_tasks",
            task_id=tid,
            message_id="m1",
            session_id="s1",
            status=status,
            created_at=rows.T0,
            updated_at=rows.T0,
            last_seq=1,
        )
    await rows.insert(
        pool,
        "charts",
        chart_id="c1",
        task_id="t1",
        message_id="m1",
        session_id="s1",
        kind="line",
        created_at=rows.T0,
        seq=2,
    )
    charts = await read_models.list_charts("m1")
    assert [c["chart_id"] for c in charts["charts"]] == ["c1"]
    assert [t["task_id"] for t in charts["active_tasks"]] == ["t2"]
    assert charts["has_active_tasks"] is True
    task = await read_models.get_chart_task("t1")
    assert task is not None and task["chart"] is not None
    assert task["chart"]["chart_id"] == "c1"
    assert await read_models.get_chart_task("t9") is None


async def test_datasets_dead_letters_and_step_eta_read_back(
    pool: asyncpg.Pool, read_models: ReadModels
) -> None:
    await rows.insert(
        pool,
        "datasets",
        dataset_id="d1",
        session_id="s1",
        name="n",
        format="csv",
        object_name="o",
        size_bytes=1,
        row_count=1,
        columns=[{"name": "a", "type": "INTEGER"}],
        sample_rows=[[1]],
        created_at=rows.T0,
        last_seq=1,
    )
    await rows.insert(
        pool,
        "dead_letters",
        seq=4,
        message_id="m",
        session_id="s1",
        consumer="c",
        stream_seq=2,
        deliveries=5,
        subject="x",
        reason="r",
        at=rows.T0,
    )
    await rows.insert(pool, "step_durations", step="plan", count=3, mean_ms=1234.6)
    dataset = await read_models.get_dataset("d1")
    assert dataset is not None and dataset["columns"] == [{"name": "a", "type": "INTEGER"}]
    assert [d["dataset_id"] for d in await read_models.list_datasets("s1")] == ["d1"]
    assert [d["reason"] for d in await read_models.list_dead_letters()] == ["r"]
    assert await read_models.step_eta_ms("plan") == 1235
    assert await read_models.step_eta_ms("never") is None


async def test_as_of_seq_always_matches_the_data_of_the_same_snapshot(
    pool: asyncpg.Pool, read_models: ReadModels
) -> None:
    """A writer commits one log row and the checkpoint together, as the projector does;
    every read must see exactly the logs up to its as_of_seq, never one more or less."""
    async with pool.acquire() as conn:
        await rows.message(conn, "m1", "s1", 1)
    stop = asyncio.Event()

    async def writer() -> None:
        seq = 1
        async with pool.acquire() as conn:
            while not stop.is_set():
                seq += 1
                async with conn.transaction():
                    await rows.log(conn, "m1", seq, "x")
                    await asyncio.sleep(0.001)  # readers run between the two writes
                    await rows.set_checkpoint(conn, seq)

    task = asyncio.create_task(writer())
    try:
        checked = 0
        while checked < 200:
            message = await read_models.get_message("m1")
            assert message is not None
            seqs = [log["seq"] for log in message["logs"]]
            assert (seqs[-1] if seqs else 0) == message["as_of_seq"]
            checked += 1
    finally:
        stop.set()
        await task


async def test_wait_for_seq_wakes_on_notify_long_before_the_poll(
    pool: asyncpg.Pool, read_models: ReadModels
) -> None:
    waiting = asyncio.create_task(read_models.wait_for_seq(5, timeout=20))
    await wait_until(_registered(read_models), timeout=5)  # it found the checkpoint short
    assert not waiting.done()
    started = time.perf_counter()
    async with pool.acquire() as conn, conn.transaction():
        await rows.set_checkpoint(conn, 5)
        await conn.execute("SELECT pg_notify('rs_projected', '5')")
    assert await asyncio.wait_for(waiting, 5) is True
    assert time.perf_counter() - started < 2.0  # the poll interval is 30 s
    assert await read_models.wait_for_seq(3, timeout=0) is True


async def _listen_backends(pool: asyncpg.Pool) -> list[int]:
    return [r["pid"] for r in await pool.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND query ILIKE 'LISTEN%rs_projected%'")]


async def test_the_listen_connection_comes_back_by_itself_when_its_backend_dies(
    pool: asyncpg.Pool, read_models: ReadModels
) -> None:
    assert await read_models.wait_for_seq(1, timeout=0) is False  # opens the listener
    [first] = await _listen_backends(pool)
    await pool.execute("SELECT pg_terminate_backend($1)", first)  # as a Postgres restart does

    async def replaced() -> list[int]:
        pids = await _listen_backends(pool)
        return pids if pids and first not in pids else []

    assert len(await wait_until(replaced, timeout=10)) == 1  # no read had to ask for it
    waiting = asyncio.create_task(read_models.wait_for_seq(5, timeout=20))
    await wait_until(_registered(read_models), timeout=5)
    started = time.perf_counter()
    async with pool.acquire() as conn, conn.transaction():
        await rows.set_checkpoint(conn, 5)
        await conn.execute("SELECT pg_notify('rs_projected', '5')")
    assert await asyncio.wait_for(waiting, 5) is True
    assert time.perf_counter() - started < 2.0  # woken by NOTIFY: the poll interval is 30 s


async def test_wait_for_seq_times_out_cleanly_without_holding_a_connection(
    pool: asyncpg.Pool, read_models: ReadModels
) -> None:
    started = time.perf_counter()
    results = await asyncio.gather(*(read_models.wait_for_seq(99, timeout=0.3) for _ in range(20)))
    elapsed = time.perf_counter() - started
    assert results == [False] * 20
    assert 0.3 <= elapsed < 3.0
    # Twenty waiters, a pool of four: none of them kept a pool connection.
    assert pool.get_idle_size() == pool.get_size()


async def test_wait_for_seq_polls_when_no_notify_comes(pool: asyncpg.Pool) -> None:
    models = ReadModels(pool, poll_interval=0.05)  # no dsn: no LISTEN at all
    try:
        waiting = asyncio.create_task(models.wait_for_seq(2, timeout=10))
        await wait_until(_registered(models), timeout=5)
        await rows.set_checkpoint(pool, 2)
        assert await asyncio.wait_for(waiting, 5) is True
    finally:
        await models.close()


def _registered(models: ReadModels):
    """A probe: true once a waiter is registered (it has read the checkpoint and waits)."""

    async def probe() -> bool:
        return bool(models._waiters)

    return probe


async def test_step_estimates_combine_the_means_of_every_partition(
    pool: asyncpg.Pool, read_models: ReadModels
) -> None:
    async with pool.acquire() as conn:
        await rows.session(conn, "s1")
    await rows.insert(pool, "step_durations", part=0, step="plan", count=3, mean_ms=1000.0)
    await rows.insert(pool, "step_durations", part=1, step="plan", count=1, mean_ms=2000.0)
    await rows.insert(pool, "step_durations", part=2, step="chart", count=2, mean_ms=500.4)
    status = await read_models.analysis_status("s1")
    assert status is not None
    assert status["step_estimates"] == {"chart": 500, "plan": 1250}  # (3*1000 + 2000) / 4
    assert await read_models.step_eta_ms("plan") == 1250
    assert await read_models.step_eta_ms("never") is None


async def test_with_partitions_a_read_is_as_of_its_sessions_partition(
    pool: asyncpg.Pool, database_url: str
) -> None:
    from runstream.contracts import partition_of
    from runstream.store import checkpoint_name

    models = ReadModels(pool, dsn=database_url, partitions=4, poll_interval=30.0)
    sids = {partition_of(f"sess{i}", 4): f"sess{i}" for i in range(20)}
    assert sorted(sids) == [0, 1, 2, 3]
    try:
        async with pool.acquire() as conn:
            for part, sid in sids.items():
                await rows.session(conn, sid)
                await rows.message(conn, f"m{part}", sid, sort_key=1)
            # Partition k covers the event stream up to 10 * (k + 1); 3 has no row yet.
            for part in (0, 1, 2):
                await conn.execute(
                    "INSERT INTO projection_checkpoints (name, seq, source_seq)"
                    " VALUES ($1, 1, $2)", checkpoint_name(4, part), 10 * (part + 1))
        for part in (0, 1, 2):
            session = await models.get_session(sids[part])
            assert session is not None and session["as_of_seq"] == 10 * (part + 1)
            message = await models.get_message(f"m{part}")
            assert message is not None and message["as_of_seq"] == 10 * (part + 1)
            assert (await models.get_logs(f"m{part}"))["as_of_seq"] == 10 * (part + 1)
        # Without a session: the least of all partitions, 0 while one has no checkpoint.
        assert (await models.list_sessions("alice"))["as_of_seq"] == 0
        assert await models.checkpoint() == 0
        assert await models.wait_for_seq(20, timeout=0, session_id=sids[1]) is True
        assert await models.wait_for_seq(21, timeout=0, session_id=sids[1]) is False
        # A waiter on one partition is woken by its partition's NOTIFY, not another's.
        waiting = asyncio.create_task(models.wait_for_seq(25, timeout=20, session_id=sids[1]))
        everywhere = asyncio.create_task(models.wait_for_seq(15, timeout=20))

        async def both_listening() -> bool:  # registered, and the listener is up
            return len(models._waiters) == 2 and models._listener is not None
        await wait_until(both_listening, timeout=10)
        async with pool.acquire() as conn:
            await conn.execute(
                "UPDATE projection_checkpoints SET source_seq = 20 WHERE name = $1",
                checkpoint_name(4, 0))
            await conn.execute("SELECT pg_notify('rs_projected', '0:20')")

            async def heard() -> bool:  # the NOTIFY for partition 0 has been handled
                return models._notified.get(0) == 20
            await wait_until(heard, timeout=10)
            assert not waiting.done()
            await conn.execute(
                "UPDATE projection_checkpoints SET source_seq = 30 WHERE name = $1",
                checkpoint_name(4, 1))
            await conn.execute("SELECT pg_notify('rs_projected', '1:30')")
            assert await asyncio.wait_for(waiting, 5) is True
            assert not everywhere.done()
            await conn.execute(
                "INSERT INTO projection_checkpoints (name, seq, source_seq) VALUES ($1, 1, 40)",
                checkpoint_name(4, 3))
            for part, seq in ((2, 30), (3, 40)):
                await conn.execute("SELECT pg_notify('rs_projected', $1)", f"{part}:{seq}")
        assert await asyncio.wait_for(everywhere, 5) is True
        assert (await models.list_sessions("alice"))["as_of_seq"] == 20
    finally:
        await models.close()
