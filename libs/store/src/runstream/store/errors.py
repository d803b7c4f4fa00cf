"""Errors raised by the store package."""

from __future__ import annotations

import asyncpg


class StoreError(Exception):
    """Base: carries a stable machine code and a human detail."""

    code = "store_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidSchemaName(StoreError):
    code = "invalid_schema_name"


# asyncpg failures that mean the server cannot serve right now (down, restarting, shutting
# down, out of connections or resources), as opposed to a wrong query or wrong data.
_POSTGRES_DOWN: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.PostgresConnectionError,  # class 08, ConnectionDoesNotExistError
    asyncpg.exceptions.OperatorInterventionError,  # class 57: admin/crash shutdown, starting
    asyncpg.exceptions.InsufficientResourcesError,  # class 53: too many connections, disk
)
_CLOSED = frozenset({
    "connection is closed", "cannot perform operation: connection is closed",
    "pool is closed", "pool is closing",
})


def postgres_unavailable(exc: BaseException) -> bool:
    """True when `exc` (from asyncpg) means Postgres is down or cannot take the work now.

    Socket errors (refused, reset) and timeouts are plain OSError/TimeoutError: the caller
    knows whether they came from here.
    """
    if isinstance(exc, _POSTGRES_DOWN):
        return True
    # A connection (or the pool) closed under the caller; other InterfaceErrors are bugs.
    return isinstance(exc, asyncpg.InterfaceError) and str(exc) in _CLOSED
