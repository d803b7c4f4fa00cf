"""Apply a batch of stream messages to the read models in one transaction with the checkpoint.

The batch commits rows and checkpoint together and NOTIFYs `rs_projected`. The caller
reads the stream in order from checkpoint + 1 and says where its batch starts (`after`):
a batch that does not continue the committed checkpoint is refused (OutOfOrder), never
folded over a hole. Sequences at or below the checkpoint are skipped (a second replica,
or a rebuild that moved ahead). The checkpoint is bound to the stream it counts in (its
name and creation time): a different stream is refused (StreamMismatch).
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import structlog

from runstream.bus.ordered import Entry, Item, StreamIdentity
from runstream.projector.fold import Batch, State, poison
from runstream.projector.writer import load, write
from runstream.store import NOTIFY_CHANNEL, PROJECTOR

logger = structlog.get_logger()

# pg_advisory_xact_lock key taken by every live batch and by rebuild's final swap ("RSPJ").
PROJECTOR_LOCK = 0x5253504A

__all__ = ["PROJECTOR_LOCK", "Item", "OutOfOrder", "Projector", "StreamMismatch", "fold_batch"]

Raw = tuple[int, str, bytes]  # (stream sequence, subject, data)


def session_settings(*, async_commit: bool = True) -> dict[str, str]:
    """Every batch looks its rows up by key in tables that start empty: a plan cached
    while a table was empty (a sequential scan) would stay while it grows, so each
    statement is planned for its own arguments."""
    settings = {"plan_cache_mode": "force_custom_plan"}
    if async_commit:
        settings["synchronous_commit"] = "off"
    return settings


class StreamMismatch(Exception):
    """The read models were folded from another stream (or beyond this one's end)."""


class OutOfOrder(Exception):
    """A batch that does not continue the committed checkpoint."""

    def __init__(self, after: int, checkpoint: int) -> None:
        super().__init__(f"batch continues {after}, checkpoint is {checkpoint}")
        self.after = after
        self.checkpoint = checkpoint


# Errors in the data itself: retrying the batch cannot help, so the event that causes
# one becomes a poison row. Anything else (connection lost, a bug) fails the batch.
_DATA_ERRORS = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)


class Projector:
    """Folds batches into the schema of `pool` (its search_path).

    `lock_key=None` and `notify=False` are for rebuild's private schema, which no live
    reader waits on.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        name: str = PROJECTOR,
        lock_key: int | None = PROJECTOR_LOCK,
        notify: bool = True,
    ) -> None:
        self.pool = pool
        self.name = name
        self.lock_key = lock_key
        self.notify = notify
        self.stream: StreamIdentity | None = None  # set by `position`

    async def position(self, stream: StreamIdentity) -> int:
        """The committed checkpoint in `stream`, where reading resumes (+1).

        Raises StreamMismatch when the checkpoint belongs to another stream of that name
        (deleted and created again) or lies beyond this stream's last sequence.
        """
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT seq, stream, stream_created FROM projection_checkpoints WHERE name = $1",
                self.name,
            )
        self.stream = stream
        if row is None:
            return 0
        self._check_identity(row["stream"], row["stream_created"])
        if row["seq"] > stream.last_seq:
            raise StreamMismatch(
                f"the read models are at sequence {row['seq']} but stream {stream.name} ends "
                f"at {stream.last_seq}: it is not the stream they were folded from"
            )
        return int(row["seq"])

    def _check_identity(self, name: str | None, created: str | None) -> None:
        if self.stream is None or created is None:
            return  # not bound yet: the first commit binds it
        if (name, created) != (self.stream.name, self.stream.created):
            raise StreamMismatch(
                f"the read models were folded from stream {name} created {created}, "
                f"not from stream {self.stream.name} created {self.stream.created}"
            )

    async def apply_batch(self, items: Sequence[Item | Entry], *, after: int | None = None) -> int:
        """Fold `items` in one transaction; returns the checkpoint after commit.

        `after`: the stream sequence the batch continues (everything between it and the
        first item no longer exists). None skips that check (tests that hand-pick items).
        """
        async with self.pool.acquire() as conn:
            try:
                async with conn.transaction():
                    return await self.apply_in_transaction(conn, items, after=after)
            except _DATA_ERRORS as exc:
                logger.warning("projector.batch_isolating", error=str(exc), size=len(items))
            # Again, splitting the batch until the event Postgres refuses is found.
            async with conn.transaction():
                return await self.apply_in_transaction(conn, items, isolate=True, after=after)

    async def apply_in_transaction(
        self,
        conn: asyncpg.Connection,
        items: Sequence[Item | Entry],
        *,
        isolate: bool = False,
        after: int | None = None,
    ) -> int:
        """The batch body, for a caller that already holds a transaction on `conn`."""
        if self.lock_key is not None:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", self.lock_key)
        row = await conn.fetchrow(
            "SELECT seq, stream, stream_created FROM projection_checkpoints WHERE name = $1"
            " FOR UPDATE",
            self.name,
        )
        if row is None:
            await conn.execute(
                "INSERT INTO projection_checkpoints (name, seq) VALUES ($1, 0)", self.name
            )
            checkpoint = 0
        else:
            self._check_identity(row["stream"], row["stream_created"])
            checkpoint = int(row["seq"])
        if after is not None and checkpoint < after:
            raise OutOfOrder(after, checkpoint)
        fresh = [
            (item[0], item[1], item[2])
            for item in sorted(items, key=lambda item: item[0])
            if item[0] > checkpoint  # at or below: redelivered, already folded
        ]
        if not fresh:
            return checkpoint
        if isolate:
            await self._bisect(conn, fresh)
        else:
            await fold_batch(conn, fresh)
        checkpoint = fresh[-1][0]
        await conn.execute(
            """
            UPDATE projection_checkpoints
            SET seq = $2, stream = coalesce($3, stream),
                stream_created = coalesce($4, stream_created)
            WHERE name = $1
            """,
            self.name,
            checkpoint,
            self.stream.name if self.stream else None,
            self.stream.created if self.stream else None,
        )
        if self.notify:
            await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, str(checkpoint))
        return int(checkpoint)

    async def _bisect(self, conn: asyncpg.Connection, items: list[Raw]) -> None:
        """Fold `items`, halving around whatever Postgres refuses: a batch with one bad
        event costs about 2·log2(size) batch folds, never one statement per event."""
        try:
            async with conn.transaction():  # a savepoint
                await fold_batch(conn, items)
            return
        except _DATA_ERRORS as exc:
            if len(items) > 1:
                half = len(items) // 2
                await self._bisect(conn, items[:half])
                await self._bisect(conn, items[half:])
                return
            error = f"fold: {type(exc).__name__}: {exc}"
        seq, subject, data = items[0]
        state = State()
        poison(state, seq, subject, data, error)
        await write(conn, state)


async def fold_batch(conn: asyncpg.Connection, items: Sequence[Raw]) -> State:
    """Decode, load what the batch needs, fold it in stream order, write the changes."""
    batch = Batch(items)
    state = batch.fold_into(await load(conn, batch.keys))
    await write(conn, state)
    return state
