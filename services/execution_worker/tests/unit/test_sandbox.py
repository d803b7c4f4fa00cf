"""The sandbox, run for real: child processes, DuckDB, RLIMITs, kills."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest

from runstream.execution_worker.sandbox import (
    SandboxError,
    SandboxLimits,
    SandboxResult,
    run_sandboxed,
)

REGIONS = ["North", "South", "East"]
ROWS = [
    (REGIONS[i % 3], round(1.5 * i, 2), date(2024, 1, 1) + timedelta(days=i)) for i in range(120)
]
CSV = ("region,revenue,day\n" + "".join(f"{r},{v},{d}\n" for r, v, d in ROWS)).encode()
ENDLESS = "SELECT count(*) FROM range(1000000000000)"


async def _run(sql: str, data: bytes = CSV, **limits: object) -> SandboxResult:
    return await run_sandboxed(
        data=data,
        fmt="csv",
        table_name="data",
        sql=sql,
        limits=SandboxLimits(**limits),  # type: ignore[arg-type]
    )


async def _error(sql: str, **limits: object) -> SandboxError:
    with pytest.raises(SandboxError) as info:
        await _run(sql, **limits)
    return info.value


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_a_group_query_returns_the_numbers_python_computes() -> None:
    result = await _run(
        "SELECT region, sum(revenue) AS total FROM data GROUP BY region ORDER BY total DESC"
    )
    want = {r: sum(v for reg, v, _ in ROWS if reg == r) for r in REGIONS}
    assert [(c.name, c.type) for c in result.columns] == [
        ("region", "VARCHAR"),
        ("total", "DOUBLE"),
    ]
    assert {r: v for r, v in result.rows} == pytest.approx(want)
    assert [v for _, v in result.rows] == sorted(want.values(), reverse=True)
    assert result.row_count == 3 and not result.truncated
    assert result.markdown.splitlines()[0] == "| region | total |"
    assert len(result.markdown.splitlines()) == 5
    assert result.duration_ms > 0


async def test_rows_are_capped_but_the_total_is_counted() -> None:
    result = await _run("SELECT * FROM data ORDER BY revenue", max_rows=10)
    assert len(result.rows) == 10 and result.row_count == len(ROWS) and result.truncated
    assert [r[1] for r in result.rows] == sorted(v for _, v, _ in ROWS)[:10]


async def test_the_markdown_table_shows_at_most_fifty_rows() -> None:
    result = await _run("SELECT * FROM data")
    lines = result.markdown.splitlines()
    assert sum(1 for line in lines if line.startswith("| ")) == 2 + 50  # header, rule, rows
    assert lines[-1] == f"_50 of {len(ROWS)} rows shown._"


async def test_parquet_values_come_back_json_safe(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    con = duckdb.connect()
    con.execute(
        "COPY (SELECT DATE '2024-03-05' AS d, TIMESTAMP '2024-03-05 10:11:12' AS ts, "
        "12.50::DECIMAL(10,2) AS price, [1, 2] AS l, {'k': 'v'} AS s, 'inf'::DOUBLE AS f, "
        "NULL::INTEGER AS n, '|a\nb' AS t) "
        f"TO '{path}' (FORMAT parquet)"
    )
    con.close()
    result = await run_sandboxed(
        data=path.read_bytes(), fmt="parquet", table_name="t", sql="SELECT * FROM t",
        limits=SandboxLimits(),
    )  # fmt: skip
    assert result.rows == [
        ["2024-03-05", "2024-03-05T10:11:12", 12.5, [1, 2], {"k": "v"}, None, None, "|a\nb"]
    ]
    assert json.loads(json.dumps(result.rows, allow_nan=False)) == result.rows
    assert "\\|a b |" in result.markdown


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/hostname')",
        "SELECT * FROM glob('/etc/*')",
        "SELECT * FROM '/etc/passwd'",
        "SELECT * FROM 'data.csv'",
        "SELECT * FROM read_parquet('https://example.com/x.parquet')",
        "SELECT * FROM read_csv_auto('s3://bucket/key.csv')",
        "COPY data TO '/tmp/rs-stolen.csv'",
        "/* harmless */ copy data to '/tmp/rs-stolen.csv'",
        "ATTACH '/tmp/rs-other.db' AS other",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET enable_external_access = true",
        "SET memory_limit = '64GB'",
        "RESET lock_configuration",
        "PRAGMA enable_profiling",
        "EXPORT DATABASE '/tmp/rs-export'",
        "IMPORT DATABASE '/tmp/rs-export'",
        "SELECT 1; COPY data TO '/tmp/rs-stolen.csv'",
        "CREATE TABLE x AS SELECT 1",
    ],
)
async def test_reaching_outside_the_data_is_refused_as_sandbox(sql: str) -> None:
    error = await _error(sql)
    assert error.kind == "sandbox", error.message
    assert not _leaked()


def _leaked() -> bool:
    return any(os.path.exists(f"/tmp/rs-{n}") for n in ("stolen.csv", "other.db", "export"))


def _child(sql: str, tmp_path: Path) -> dict[str, object]:
    """The child alone, without the parent's keyword pre-check: DuckDB must refuse too."""
    import subprocess

    data = tmp_path / "d.csv"
    data.write_bytes(CSV)
    request = {
        "path": str(data), "fmt": "csv", "table": "data", "sql": sql,
        "limits": {"memory_mb": 256, "threads": 1, "cpu_s": 30, "max_rows": 5},
    }  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-m", "runstream.execution_worker._child"],
        input=json.dumps(request).encode(),
        capture_output=True,
        check=True,
        timeout=60,
    )
    return json.loads(out.stdout.splitlines()[-1])


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "COPY data TO '{tmp}/stolen.csv'",
        "ATTACH '{tmp}/other.db'",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET threads = 8",
        "PRAGMA enable_profiling",
        "SELECT 1; SELECT 2",
    ],
)
def test_the_engine_itself_refuses_what_the_precheck_would_catch(sql: str, tmp_path: Path) -> None:
    reply = _child(sql.format(tmp=tmp_path), tmp_path)
    assert reply["ok"] is False and reply["kind"] == "sandbox", reply
    assert not (tmp_path / "stolen.csv").exists() and not (tmp_path / "other.db").exists()


def test_the_engine_is_locked_before_the_query_runs(tmp_path: Path) -> None:
    reply = _child(
        "SELECT current_setting('enable_external_access'), current_setting('lock_configuration'),"
        " current_setting('threads')",
        tmp_path,
    )
    assert reply["ok"] is True
    assert reply["result"]["rows"] == [[False, True, 1]]  # type: ignore[index]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT list(range(200000000))",
        "SELECT repeat('x', 2000000000)",
        "SELECT string_agg(a::VARCHAR || repeat('x', 200), ',') FROM range(10000000) t(a)",
    ],
)
async def test_a_memory_bomb_fails_as_memory(sql: str) -> None:
    error = await _error(sql, memory_mb=128)
    assert error.kind == "memory", error.message


async def test_an_endless_query_is_killed_as_timeout_within_its_limit() -> None:
    started = time.monotonic()
    error = await _error(ENDLESS, timeout_s=2.0)
    assert error.kind == "timeout"
    assert time.monotonic() - started < 2.0 + 1.0


async def test_cancelling_the_caller_kills_the_child_within_a_second() -> None:
    pid_box: list[int] = []
    running = asyncio.Event()
    task = asyncio.create_task(
        run_sandboxed(
            data=CSV,
            fmt="csv",
            table_name="data",
            sql=ENDLESS,
            limits=SandboxLimits(timeout_s=60),
            on_start=pid_box.append,
            on_running=running.set,
        )
    )
    await asyncio.wait_for(running.wait(), timeout=30)
    (pid,) = pid_box
    assert not _gone(pid)
    cancelled_at = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - cancelled_at < 1.0
    assert _gone(pid)


@pytest.mark.parametrize(
    "sql",
    ["SELEC region FROM data", "SELECT nope FROM data", "SELECT * FROM missing", "SELECT 'a'::INT"],
)
async def test_a_broken_query_fails_as_sql(sql: str) -> None:
    error = await _error(sql)
    assert error.kind == "sql" and error.code == "execution_sql"


async def test_an_unreadable_dataset_fails_as_sql_and_says_so() -> None:
    with pytest.raises(SandboxError) as info:
        await run_sandboxed(
            data=b"not parquet", fmt="parquet", table_name="data", sql="SELECT 1",
            limits=SandboxLimits(),
        )  # fmt: skip
    assert info.value.kind == "sql" and "could not be loaded" in info.value.message


async def test_the_dataset_temp_file_is_deleted_afterwards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    await _run("SELECT count(*) FROM data")
    await _error("SELECT nope FROM data")
    assert os.listdir(tmp_path) == []


async def test_a_child_killed_from_outside_is_a_retryable_error_not_a_memory_error() -> None:
    pid_box: list[int] = []
    running = asyncio.Event()
    task = asyncio.create_task(
        run_sandboxed(
            data=CSV, fmt="csv", table_name="data", sql=ENDLESS,
            limits=SandboxLimits(timeout_s=60), on_start=pid_box.append,
            on_running=running.set,
        )
    )
    await asyncio.wait_for(running.wait(), timeout=30)
    os.kill(pid_box[0], signal.SIGKILL)  # as the OOM killer or an operator would
    with pytest.raises(SandboxError) as info:
        await asyncio.wait_for(task, 10)
    assert info.value.kind == "killed" and info.value.retryable, info.value.message
    assert not (await _error("SELECT nope FROM data")).retryable
