"""The values of a dataset's text columns, so a question can name them ("in Poland").

Only columns with few distinct values are kept: categories, not names or ids.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import duckdb

from runstream.analysis_worker.planner.lexicon import column_kind, quote_ident
from runstream.contracts import Column

MAX_VALUES = 200


def profile_values(con: Any, table: str, columns: list[Column]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for col in columns:
        if column_kind(col.type) != "text":
            continue
        c = quote_ident(col.name)
        rows = con.execute(
            f"SELECT {c} FROM {quote_ident(table)} WHERE {c} IS NOT NULL GROUP BY {c} "
            f"ORDER BY count(*) DESC, {c} LIMIT {MAX_VALUES + 1}"
        ).fetchall()
        if len(rows) <= MAX_VALUES:
            out[col.name] = [str(r[0]) for r in rows]
    return out


def profile_dataset(data: bytes, fmt: str, columns: list[Column]) -> dict[str, list[str]]:
    """Load an uploaded CSV or Parquet file (as the gateway did) and profile it."""
    fd, path = tempfile.mkstemp(suffix=f".{fmt}")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        con = duckdb.connect(config={"threads": 1, "memory_limit": "256MB"})
        try:
            reader = "read_parquet" if fmt == "parquet" else "read_csv_auto"
            # The path is ours (mkstemp), never the client's.
            con.execute(f"CREATE TABLE data AS SELECT * FROM {reader}('{path}')")
            return profile_values(con, "data", columns)
        finally:
            con.close()
    finally:
        os.unlink(path)
