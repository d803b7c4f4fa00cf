"""SQL written outside the planner (by a language model) checked against the table.

The sandbox is what makes any SQL safe to run; this check is what makes a plan honest:
exactly one read-only SELECT, over the dataset's table only, naming columns that exist.
DuckDB itself parses the statement and binds it to an empty copy of the table, so the
check is the engine's own reading, not a pattern match.
"""

from __future__ import annotations

import duckdb

from runstream.analysis_worker.planner.errors import PlannerResponseInvalid
from runstream.analysis_worker.planner.lexicon import quote_ident
from runstream.contracts import Column


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def validate_sql(sql: str, columns: list[Column], table: str) -> list[str]:
    """The names of the result's columns; `PlannerResponseInvalid` when the SQL is unfit."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise PlannerResponseInvalid(
            f"the planner's SQL does not parse: {_first_line(exc)}"
        ) from None
    if len(statements) != 1:
        raise PlannerResponseInvalid(
            f"the planner's SQL must be one statement, and it has {len(statements)}"
        )
    if statements[0].type != duckdb.StatementType.SELECT:
        kind = statements[0].type.name
        raise PlannerResponseInvalid(f"the planner's SQL must be a read-only SELECT, not {kind}")
    con = duckdb.connect(config={"enable_external_access": False, "threads": 1})
    try:
        defs = ", ".join(f"{quote_ident(c.name)} {_type(con, c.type)}" for c in columns)
        con.execute(f"CREATE TABLE {quote_ident(table)} ({defs})")
        try:
            # A relation is bound (names and types resolved) but never run.
            return list(con.sql(sql).columns)
        except duckdb.Error as exc:
            raise PlannerResponseInvalid(
                f"the planner's SQL does not fit the table {table!r}: {_first_line(exc)}"
            ) from None
    finally:
        con.close()


def _type(con: duckdb.DuckDBPyConnection, type_name: str) -> str:
    """The column's DuckDB type, or VARCHAR when the name is not one DuckDB accepts."""
    try:
        con.execute(f"SELECT CAST(NULL AS {type_name})")
    except duckdb.Error:
        return "VARCHAR"
    return type_name
