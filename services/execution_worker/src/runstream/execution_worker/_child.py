"""The sandbox child: one query over one dataset, in a process that may be killed at will.

Run as `python -m runstream.execution_worker._child`. The request arrives as JSON on
stdin; the child writes `{"phase": "running"}` once the data is loaded and the
engine is locked down, then one final JSON line: the result or a classified error.
Nothing it is asked to run can undo the locks, because the parent only ever hands
it one SELECT and DuckDB refuses configuration changes after `lock_configuration`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import signal
import sys
import time
from typing import Any

import duckdb

from runstream.contracts import json_safe
from runstream.execution_worker.display import markdown

MiB = 1024 * 1024
RESULT_TABLE = "__rs_result"

# DuckDB's own words for "the configuration refused this".
_SANDBOX_MARKERS = (
    "Permission Error",
    "disabled by configuration",
    "disabled through configuration",
    "configuration has been locked",
    "lock_configuration",
)


PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """A worker killed outright (SIGKILL, OOM) must not leave its query running."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the request was armed
        os._exit(1)


def main() -> None:
    _die_with_parent(int(os.environ.get("RS_SANDBOX_PARENT", os.getppid())))
    raw = sys.stdin.buffer.read()
    if not raw:  # a spare child that was never used: its worker closed it
        return
    request = json.loads(raw)
    started = time.monotonic()
    try:
        result = run(request)
    except MemoryError:
        _emit({"ok": False, "kind": "memory", "message": "the query ran out of memory"})
        return
    except _Refused as exc:
        _emit({"ok": False, "kind": exc.kind, "message": exc.message})
        return
    except duckdb.Error as exc:
        _emit({"ok": False, **classify(exc)})
        return
    result["duration_ms"] = int((time.monotonic() - started) * 1000)
    _emit({"ok": True, "result": result})


class _Refused(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind, self.message = kind, message


# With external access off, `FROM '/etc/passwd'` is no longer a file scan but an unknown
# table: still an attempt to read a file, so it is reported as one.
_PATH_AS_TABLE = re.compile(
    r"Table with name (\S*[/\\:]\S*|\S+\.(csv|tsv|txt|json|ndjson|parquet|gz|zst)) does not exist",
    re.IGNORECASE,
)


def classify(exc: duckdb.Error) -> dict[str, str]:
    message = str(exc).strip()
    if isinstance(exc, duckdb.CatalogException) and _PATH_AS_TABLE.search(message):
        return {"kind": "sandbox", "message": f"queries cannot read files: {message}"}
    if isinstance(exc, duckdb.OutOfMemoryException) or "Out of Memory" in message:
        return {"kind": "memory", "message": message}
    if isinstance(exc, duckdb.PermissionException) or any(m in message for m in _SANDBOX_MARKERS):
        return {"kind": "sandbox", "message": message}
    if isinstance(exc, duckdb.InterruptException):
        return {"kind": "timeout", "message": message}
    return {"kind": "sql", "message": message}


def run(req: dict[str, Any]) -> dict[str, Any]:
    limits = req["limits"]
    memory_mb, threads = int(limits["memory_mb"]), int(limits["threads"])
    _limit(resource.RLIMIT_CPU, int(limits["cpu_s"]), int(limits["cpu_s"]) + 1)
    _limit(resource.RLIMIT_NOFILE, 64, 64)
    con = duckdb.connect(
        ":memory:",
        config={
            "threads": threads,
            "memory_limit": f"{memory_mb}MB",
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            "allow_community_extensions": False,
        },
    )
    # DuckDB reserves its address space at connect; allow that plus the memory limit and
    # some headroom, so a runaway allocation outside the buffer manager fails fast too.
    reserved = _vm_size()
    if reserved:
        space = reserved + 2 * memory_mb * MiB + 256 * MiB
        _limit(resource.RLIMIT_AS, space, space)
    _load(con, req["path"], req["fmt"], req["table"])
    if req.get("copy_to"):
        # Still before the lock-down: the only file this child ever writes.
        _copy_parquet(con, req["table"], req["copy_to"])
    for statement in (
        "SET enable_external_access = false",
        "SET allow_unsigned_extensions = false",
        "SET max_temp_directory_size = '0KiB'",
        "SET lock_configuration = true",
    ):
        con.execute(statement)
    # Nothing needs to write a file from here on; a write now kills the child (SIGXFSZ).
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    _limit(resource.RLIMIT_FSIZE, 0, 0)
    query = single_select(req["sql"])
    _emit({"phase": "running"})
    return execute(con, query, int(limits["max_rows"]))


def _load(con: duckdb.DuckDBPyConnection, path: str, fmt: str, table: str) -> None:
    reader = {"csv": "read_csv_auto", "parquet": "read_parquet"}.get(fmt)
    if reader is None:
        raise _Refused("sql", f"unsupported dataset format {fmt!r}")
    ident = '"' + table.replace('"', '""') + '"'
    literal = "'" + path.replace("'", "''") + "'"
    try:
        con.execute(f"CREATE TABLE {ident} AS SELECT * FROM {reader}({literal})")
    except duckdb.OutOfMemoryException:
        raise
    except duckdb.Error as exc:
        # Starts with sandbox.LOAD_FAILED: the worker tells a bad copy from a bad query.
        raise _Refused("sql", f"the dataset could not be loaded as {fmt}: {exc}") from exc


def _copy_parquet(con: duckdb.DuckDBPyConnection, table: str, path: str) -> bool:
    """Write the loaded table to `path` as Parquet, so later queries on these bytes load
    that instead of parsing the CSV again. Written under a temporary name and renamed
    only once complete and read back with the table's exact columns and types; any
    failure (disk full, memory) leaves no file and never fails the query."""
    ident = '"' + table.replace('"', '""') + '"'
    part = path + ".part"
    literal = "'" + part.replace("'", "''") + "'"
    try:
        con.execute(f"COPY {ident} TO {literal} (FORMAT parquet)")
        wrote = con.execute(f"DESCRIBE SELECT * FROM read_parquet({literal})").fetchall()
        loaded = con.execute(f"DESCRIBE SELECT * FROM {ident}").fetchall()
        if [r[:2] for r in wrote] != [r[:2] for r in loaded]:
            raise ValueError("the Parquet copy does not describe the table it came from")
        os.rename(part, path)
        return True
    except Exception:  # a copy not kept only makes the next query parse the CSV again
        with contextlib.suppress(OSError):
            os.unlink(part)
        return False


def single_select(sql: str) -> str:
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise _Refused("sql", str(exc).strip()) from exc
    if len(statements) != 1:
        raise _Refused("sandbox", f"exactly one statement is allowed, got {len(statements)}")
    statement = statements[0]
    if statement.type != duckdb.StatementType.SELECT:
        kind = statement.type.name
        raise _Refused("sandbox", f"only a SELECT query is allowed, not {kind}")
    return statement.query.strip().rstrip(";")


def execute(con: duckdb.DuckDBPyConnection, query: str, max_rows: int) -> dict[str, Any]:
    rel = con.sql(query)
    names, types = list(rel.columns), [str(t) for t in rel.types]
    # Materialise once, so the total count and the capped rows come from one run.
    con.execute(f"CREATE TEMP TABLE {RESULT_TABLE} AS {query}\n")
    (total,) = con.execute(f"SELECT count(*) FROM {RESULT_TABLE}").fetchone()  # type: ignore[misc]
    rows = con.execute(f"SELECT * FROM {RESULT_TABLE} LIMIT {max_rows}").fetchall()
    safe = json_safe(rows)
    return {
        "columns": [{"name": n, "type": t} for n, t in zip(names, types, strict=True)],
        "rows": safe,
        "row_count": int(total),
        "truncated": int(total) > len(safe),
        "markdown": markdown(names, safe, int(total)),
    }


def _limit(which: int, soft: int, hard: int) -> None:
    _, cur_hard = resource.getrlimit(which)
    if cur_hard != resource.RLIM_INFINITY:
        hard = min(hard, cur_hard)
        soft = min(soft, hard)
    resource.setrlimit(which, (soft, hard))


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, allow_nan=False) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
