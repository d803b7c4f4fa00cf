"""The Parquet copy of a CSV, written by the real sandbox child before its lock-down."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from runstream.execution_worker.sandbox import SandboxLimits, SandboxResult, run_sandboxed

# Every type read_csv_auto infers here, with NULLs (empty fields) in each column and text
# that needs quoting (commas, quotes, a newline).
MIXED = (
    b'id,day,seen_at,clock,price,big,flag,"unit name",note,empty\n'
    b'1,2024-01-31,2024-01-31 10:11:12,10:11:12,12.50,12345678901234.56,true,kg,'
    b'"a, ""quoted"" b",\n'
    b"2,,2024-02-29 23:59:59,,3.1,,false,,plain,\n"
    b'3,2024-03-01,,08:00:00,,-0.001,,"l, m","multi\nline",\n'
    b"4,1999-12-31,2000-01-01 00:00:00,23:59:59,-7,0,true,kg,,\n"
)

QUERIES = [
    "SELECT * FROM data ORDER BY id",
    "SELECT day, price * 2 AS twice, note FROM data WHERE flag ORDER BY id",
    "SELECT count(*), count(day), sum(price), min(seen_at), max(clock), avg(big) FROM data",
    'SELECT "unit name", count(*) AS n FROM data GROUP BY 1 ORDER BY 1 NULLS FIRST',
    "SELECT note FROM data WHERE note LIKE '%,%' ORDER BY id",
    "SELECT day + INTERVAL 1 DAY AS next_day, year(seen_at) AS y FROM data ORDER BY id",
]


async def _run(sql: str, **kw: object) -> SandboxResult:
    args: dict[str, object] = {"data": MIXED, "fmt": "csv", **kw}
    return await run_sandboxed(
        table_name="data", sql=sql, limits=SandboxLimits(max_rows=50), **args  # type: ignore[arg-type]
    )


def _same(a: SandboxResult, b: SandboxResult) -> bool:
    return (a.columns, a.rows, a.row_count, a.markdown) == (b.columns, b.rows, b.row_count,
                                                            b.markdown)


async def test_the_copy_loads_with_the_csv_columns_types_and_values(tmp_path: Path) -> None:
    copy = tmp_path / "copy.parquet"
    first = await _run(QUERIES[0], copy_to=str(copy))
    assert copy.is_file() and not (tmp_path / "copy.parquet.part").exists()
    types = {c.name: c.type for c in first.columns}
    assert types == {
        "id": "BIGINT", "day": "DATE", "seen_at": "TIMESTAMP", "clock": "TIME", "price": "DOUBLE",
        "big": "DOUBLE", "flag": "BOOLEAN", "unit name": "VARCHAR", "note": "VARCHAR",
        "empty": "VARCHAR",
    }  # fmt: skip
    assert first.rows[0][8] == 'a, "quoted" b' and first.rows[2][8] == "multi\nline"
    assert first.rows[1][1] is None and first.rows[3][9] is None
    for sql in QUERIES:
        from_csv = await _run(sql)
        from_parquet = await _run(sql, data=b"", fmt="parquet", source=str(copy))
        assert _same(from_csv, from_parquet), sql
    assert copy.is_file()  # a source is the caller's: left in place


async def test_a_copy_that_cannot_be_written_leaves_the_query_as_it_was(tmp_path: Path) -> None:
    nowhere = tmp_path / "missing-dir" / "copy.parquet"
    with_copy = await _run(QUERIES[2], copy_to=str(nowhere))
    assert _same(with_copy, await _run(QUERIES[2]))
    assert not (tmp_path / "missing-dir").exists()


async def test_a_failed_query_still_leaves_a_whole_copy(tmp_path: Path) -> None:
    """The copy comes from the load, before the query: a query error does not spoil it."""
    copy = tmp_path / "copy.parquet"
    with pytest.raises(Exception, match="sql"):
        await _run("SELECT no_such_column FROM data", copy_to=str(copy))
    assert _same(await _run(QUERIES[0]),
                 await _run(QUERIES[0], data=b"", fmt="parquet", source=str(copy)))


def _child(sql: str, tmp_path: Path, copy_to: Path) -> dict[str, object]:
    data = tmp_path / "d.csv"
    data.write_bytes(MIXED)
    request = {
        "path": str(data), "fmt": "csv", "table": "data", "sql": sql, "copy_to": str(copy_to),
        "limits": {"memory_mb": 256, "threads": 1, "cpu_s": 30, "max_rows": 5},
    }  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-m", "runstream.execution_worker._child"],
        input=json.dumps(request).encode(), capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    return json.loads(out.stdout.splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_parquet('{copy}')",
        "COPY data TO '{tmp}/stolen.parquet' (FORMAT parquet)",
        "SELECT * FROM read_csv('/etc/passwd')",
    ],
)
def test_the_query_after_a_copy_runs_locked_down_as_ever(sql: str, tmp_path: Path) -> None:
    """The child wrote a file a moment ago; the user's SQL still cannot read or write one."""
    copy = tmp_path / "copy.parquet"
    reply = _child(sql.format(copy=copy, tmp=tmp_path), tmp_path, copy)
    assert copy.is_file()
    assert reply["ok"] is False and reply["kind"] == "sandbox", reply
    assert not (tmp_path / "stolen.parquet").exists()


def test_the_engine_is_locked_after_writing_a_copy(tmp_path: Path) -> None:
    reply = _child(
        "SELECT current_setting('enable_external_access'), current_setting('lock_configuration')",
        tmp_path, tmp_path / "copy.parquet",
    )  # fmt: skip
    assert reply["ok"] is True
    assert reply["result"]["rows"] == [[False, True]]  # type: ignore[index]
