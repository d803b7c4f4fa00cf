"""The asyncpg pool: search_path pinned to one schema, JSON/JSONB through msgspec."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import asyncpg
import msgspec

from runstream.store.errors import InvalidSchemaName

DEFAULT_SCHEMA = "runstream"

_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_json_encoder = msgspec.json.Encoder()
_json_decoder = msgspec.json.Decoder()


def validate_schema(schema: str) -> str:
    """Schema names are interpolated into DDL, so only plain lower-case identifiers pass."""
    if not _SCHEMA_RE.fullmatch(schema):
        raise InvalidSchemaName(f"schema must match {_SCHEMA_RE.pattern} (got {schema!r})")
    return schema


def _encode_json(value: Any) -> str:
    return _json_encoder.encode(value).decode()


def _decode_json(text: str) -> Any:
    return _json_decoder.decode(text)


async def init_connection(conn: asyncpg.Connection) -> None:
    """Codecs every Runstream connection uses: json/jsonb <-> Python builtins (and Structs)."""
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(
            typename,
            encoder=_encode_json,
            decoder=_decode_json,
            schema="pg_catalog",
            format="text",
        )


async def keep_session(conn: asyncpg.Connection) -> None:
    """The pool's `reset`: nothing to send on release.

    asyncpg's default sends `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    RESET ALL;` every time a connection goes back to the pool: a second round trip for
    every one-query read (about a tenth of the gateway's CPU per submit, and Postgres
    work on the same cores). Runstream's pooled connections hold no session state to
    undo: settings come at connect time, transactions are `async with` blocks (asyncpg
    still rolls back one left open, and drops listeners, before calling this), LISTEN
    has a connection of its own, and no code takes session advisory locks, holds
    cursors or runs a bare SET on them. Keep it that way, or reset here.
    """


async def connect(dsn: str, *, schema: str = DEFAULT_SCHEMA) -> asyncpg.Connection:
    """One connection configured like the pool's (for listeners and one-off jobs)."""
    conn = await asyncpg.connect(dsn, server_settings={"search_path": validate_schema(schema)})
    await init_connection(conn)
    return conn


async def create_pool(
    dsn: str,
    *,
    schema: str = DEFAULT_SCHEMA,
    min_size: int = 1,
    max_size: int = 10,
    connect_timeout: float = 60.0,
    command_timeout: float | None = None,
    settings: Mapping[str, str] | None = None,
) -> asyncpg.Pool:
    """`connect_timeout` bounds opening a connection, `command_timeout` every query: without
    them a server that stops answering (rather than refusing) holds a caller for ever.
    `settings`: more session settings for every connection (e.g. the projector's)."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        server_settings={**(settings or {}), "search_path": validate_schema(schema)},
        init=init_connection,
        reset=keep_session,
        timeout=connect_timeout,
        command_timeout=command_timeout,
    )
    assert pool is not None
    return pool
