"""asyncpg pool, SQL migrations, read-model queries."""

from runstream.store.errors import InvalidSchemaName, StoreError, postgres_unavailable
from runstream.store.migrate import migrate, migrations
from runstream.store.pool import (
    DEFAULT_SCHEMA,
    connect,
    create_pool,
    init_connection,
    validate_schema,
)
from runstream.store.queries import NOTIFY_CHANNEL, PROJECTOR, ReadModels, checkpoint_name
from runstream.store.store import Store, open_store

__all__ = [
    "DEFAULT_SCHEMA",
    "NOTIFY_CHANNEL",
    "PROJECTOR",
    "InvalidSchemaName",
    "ReadModels",
    "Store",
    "StoreError",
    "checkpoint_name",
    "connect",
    "create_pool",
    "init_connection",
    "migrate",
    "migrations",
    "open_store",
    "postgres_unavailable",
    "validate_schema",
]
