"""The one exception-handling place: a dependency outage is a 503 `unavailable` with
Retry-After, whatever shape it surfaces in; a bug stays a 500."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import nats.errors
import nats.js.errors
import pytest
from litestar import Litestar, get
from litestar.testing import AsyncTestClient

from runstream.gateway.errors import EXCEPTION_HANDLERS
from runstream.testing import free_port

Raise = Callable[[], Awaitable[Any]]


def _raise(exc: BaseException) -> Raise:
    async def go() -> Any:
        raise exc
    return go


async def _refused_postgres() -> Any:
    """A real refused connection, surfacing as a plain OSError out of asyncpg."""
    return await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{free_port()}/x", timeout=5)


def _from(outer: Exception, cause: BaseException) -> Raise:
    async def go() -> Any:
        try:
            raise cause
        except BaseException as exc:
            raise outer from exc
    return go


async def _answer(raiser: Raise) -> Any:
    @get("/boom")
    async def boom() -> None:
        await raiser()

    app = Litestar([boom], exception_handlers=EXCEPTION_HANDLERS)
    async with AsyncTestClient(app) as client:
        return await client.get("/boom")


def _case(raiser: Raise, dependency: str, name: str) -> Any:
    return pytest.param(raiser, dependency, id=name)


@pytest.mark.parametrize(("raiser", "dependency"), [
    _case(_raise(asyncpg.exceptions.CannotConnectNowError("the database system is starting up")),
          "postgres", "postgres-starting-up"),
    _case(_raise(asyncpg.exceptions.AdminShutdownError("terminating connection")),
          "postgres", "postgres-admin-shutdown"),
    _case(_raise(asyncpg.exceptions.TooManyConnectionsError("too many clients")),
          "postgres", "postgres-too-many-connections"),
    _case(_raise(asyncpg.exceptions.ConnectionDoesNotExistError("closed mid-operation")),
          "postgres", "postgres-connection-lost"),
    _case(_raise(asyncpg.InterfaceError("cannot perform operation: connection is closed")),
          "postgres", "postgres-connection-closed"),
    _case(_raise(asyncpg.InterfaceError("pool is closing")), "postgres", "postgres-pool-closing"),
    _case(_refused_postgres, "postgres", "postgres-connection-refused"),
    _case(_raise(nats.errors.ConnectionClosedError()), "nats", "nats-closed"),
    _case(_raise(nats.errors.ConnectionReconnectingError()), "nats", "nats-reconnecting"),
    _case(_raise(nats.errors.NoRespondersError()), "nats", "nats-no-responders"),
    _case(_raise(nats.errors.TimeoutError()), "nats", "nats-timeout"),
    _case(_raise(nats.errors.OutboundBufferLimitError()), "nats", "nats-disconnected-publish"),
    _case(_raise(nats.js.errors.ServiceUnavailableError()), "nats", "jetstream-503"),
    _case(_raise(nats.js.errors.NoStreamResponseError()), "nats", "jetstream-no-stream"),
    _case(_from(RuntimeError("wrapped"), nats.errors.NoRespondersError()), "nats",
          "raised-from-a-nats-error"),
    _case(_raise(ExceptionGroup("gathered", [ValueError(),
                                             asyncpg.exceptions.AdminShutdownError()])),
          "postgres", "inside-an-exception-group"),
    _case(_raise(ConnectionResetError("reset by peer")), "unknown", "socket-error"),
])
async def test_an_outage_is_503_unavailable_with_retry_after(raiser: Raise, dependency: str):
    r = await _answer(raiser)
    assert r.status_code == 503, r.text
    assert int(r.headers["retry-after"]) >= 1
    error = r.json()["error"]
    assert error["code"] == "unavailable" and error["message"]
    assert error["details"] == {"dependency": dependency}


async def test_a_pool_that_cannot_hand_out_a_connection_in_time_is_503(database_url: str):
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        async with pool.acquire():  # the only connection is taken
            r = await _answer(lambda: pool.acquire(timeout=0.1))
    finally:
        await pool.close()
    assert r.status_code == 503 and r.json()["error"]["details"] == {"dependency": "postgres"}


@pytest.mark.parametrize("exc", [
    KeyError("a bug"),
    ValueError("a bug"),
    asyncpg.exceptions.UndefinedTableError('relation "nope" does not exist'),
    asyncpg.exceptions.DataError("invalid input for query argument"),
    asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
    nats.js.errors.BadRequestError(),
    nats.errors.BadSubjectError(),
], ids=lambda e: type(e).__name__)
async def test_a_bug_stays_a_500(exc: Exception):
    r = await _answer(_raise(exc))
    assert r.status_code == 500 and "retry-after" not in r.headers
    assert r.json() == {"error": {"code": "server_error", "message": "internal error",
                                  "details": {}}}
