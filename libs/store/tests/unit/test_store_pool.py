"""The pool hands connections back without a reset round trip, and still safely."""

from __future__ import annotations

import asyncpg


async def test_a_released_connection_costs_no_query(pool: asyncpg.Pool) -> None:
    queries: list[str] = []

    def log(record: asyncpg.connection.LoggedQuery) -> None:
        queries.append(record.query)

    async with pool.acquire() as conn:
        raw = conn._con  # the connection behind the pool's proxy, which lives on
        raw.add_query_logger(log)
        assert await conn.fetchval("SELECT 1") == 1
    raw.remove_query_logger(log)
    assert queries == ["SELECT 1"], "nothing is sent on release"


async def test_a_transaction_left_open_is_rolled_back_on_release(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        raw = conn._con
        await conn.execute("BEGIN")
        await conn.execute("CREATE TABLE left_open (x int)")
    assert not raw.is_in_transaction(), "the next user would be inside it"
    async with pool.acquire() as conn:  # nor was it committed
        assert await conn.fetchval("SELECT to_regclass('left_open')") is None
