"""Reading an uploaded dataset's schema, row count and a few sample rows (DuckDB)."""

from __future__ import annotations

import asyncio
import os
import tempfile
from typing import Any

import duckdb
import msgspec

from runstream.contracts import Column, json_safe
from runstream.gateway.schemas import DatasetFormat

PARQUET_MAGIC = b"PAR1"
SAMPLE_ROWS = 5


class Inspected(msgspec.Struct, frozen=True):
    format: DatasetFormat
    columns: list[Column]
    row_count: int
    sample_rows: list[list[Any]]


class UnreadableDataset(ValueError):
    pass


def detect_format(data: bytes, declared: str | None, content_type: str | None) -> DatasetFormat:
    if declared:
        fmt = declared.lower()
        if fmt == "csv":
            return "csv"
        if fmt == "parquet":
            return "parquet"
        raise UnreadableDataset(f"unsupported format {declared!r}: use csv or parquet")
    if data[:4] == PARQUET_MAGIC:
        return "parquet"
    if content_type and "parquet" in content_type.lower():
        return "parquet"
    return "csv"


def _inspect(data: bytes, fmt: DatasetFormat) -> Inspected:
    fd, path = tempfile.mkstemp(suffix=f".{fmt}")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        con = duckdb.connect(config={"threads": 1, "memory_limit": "256MB"})
        try:
            reader = "read_parquet" if fmt == "parquet" else "read_csv_auto"
            # The path is ours (mkstemp), never the client's.
            source = f"{reader}('{path}')"
            described = con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
            columns = [Column(name=str(row[0]), type=str(row[1])) for row in described]
            if not columns:
                raise UnreadableDataset("the file has no columns")
            count = con.execute(f"SELECT count(*) FROM {source}").fetchall()[0]
            sample = con.execute(f"SELECT * FROM {source} LIMIT {SAMPLE_ROWS}").fetchall()
        finally:
            con.close()
    except duckdb.Error as exc:
        raise UnreadableDataset(f"DuckDB cannot read this {fmt} file: {exc}") from None
    finally:
        os.unlink(path)
    return Inspected(
        format=fmt, columns=columns, row_count=int(count[0] if count else 0),
        sample_rows=json_safe(sample),
    )


async def inspect_dataset(data: bytes, fmt: DatasetFormat) -> Inspected:
    return await asyncio.to_thread(_inspect, data, fmt)
