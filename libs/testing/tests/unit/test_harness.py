import asyncpg

from runstream.testing import wait_until


async def test_nats_server_from_the_wheel_has_jetstream(js):
    info = await js.account_info()
    assert info.limits is not None


async def test_each_test_gets_a_fresh_empty_database(database_url):
    conn = await asyncpg.connect(database_url)
    try:
        tables = await conn.fetchval(
            "select count(*) from information_schema.tables where table_schema='public'")
        assert tables == 0
    finally:
        await conn.close()


async def test_wait_until_returns_the_first_truthy_value():
    calls = []

    async def probe():
        calls.append(1)
        return len(calls) if len(calls) >= 3 else 0

    assert await wait_until(probe, timeout=5) == 3


async def test_a_throwaway_postgres_cluster_accepts_connections_and_stops_cleanly():
    from runstream.testing import PostgresCluster

    cluster = PostgresCluster().start()
    pid = cluster.proc.pid
    try:
        conn = await asyncpg.connect(cluster.dsn)
        try:
            assert await conn.fetchval("select 1") == 1
        finally:
            await conn.close()
    finally:
        cluster.cleanup()
    import os

    try:
        os.kill(pid, 0)
        alive = True
    except ProcessLookupError:
        alive = False
    assert not alive, "postgres itself was stopped, not a wrapper"
    assert not cluster.data_dir.exists()
