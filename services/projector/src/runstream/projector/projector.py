"""Apply a batch of stream messages to the read models in one transaction with the checkpoint.

The batch commits rows and checkpoint together and NOTIFYs `rs_projected`. The caller
reads the stream in order from checkpoint + 1 and says where its batch starts (`after`):
a batch that does not continue the committed checkpoint is refused (OutOfOrder), never
folded over a hole. Sequences at or below the checkpoint are skipped (a second replica,
or a rebuild that moved ahead). The checkpoint is bound to the stream it counts in (its
name and creation time): a different stream is refused (StreamMismatch).

A partition's projector (`part`, `sourced=True`) reads the partitioned view of the
stream: its checkpoint `seq` is a view sequence (where reading resumes), `source_seq` the
event-stream sequence it covers, and every item is folded under its origin sequence and
subject (`Nats-Stream-Source`), so its rows are the single projector's rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import structlog

from runstream.bus.ordered import Entry, Item, StreamIdentity
from runstream.bus.partitions import source_of
from runstream.projector.fold import Batch, State, poison
from runstream.projector.writer import load, write
from runstream.store import NOTIFY_CHANNEL, checkpoint_name

logger = structlog.get_logger()

# Advisory lock key ("RSPJ"): every live batch takes it shared (partitions fold side by
# side, each serialised by its checkpoint row), rebuild's final swap takes it exclusive.
PROJECTOR_LOCK = 0x5253504A

__all__ = [
    "PROJECTOR_LOCK", "Item", "OutOfOrder", "Projector", "StreamMismatch", "checkpoint_name",
    "fold_batch",
]  # fmt: skip


def notify_payload(part: int | None, source_seq: int) -> str:
    """`rs_projected` payload: `<seq>` for the single projector, `<part>:<seq>` for a
    partition (the event-stream sequence it now covers)."""
    return str(source_seq) if part is None else f"{part}:{source_seq}"

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
    reader waits on. `part` (with `sourced=True`): partition `part` of `partitions`,
    reading the partitioned view (see the module docstring).
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        name: str | None = None,
        lock_key: int | None = PROJECTOR_LOCK,
        notify: bool = True,
        partitions: int = 1,
        part: int = 0,
    ) -> None:
        self.pool = pool
        self.partitions = partitions
        self.part = part
        self.sourced = partitions > 1  # reads the view: fold under the origin sequence
        self.name = name or checkpoint_name(partitions, part)
        self.lock_key = lock_key
        self.notify = notify
        self.stream: StreamIdentity | None = None  # set by `position`
        # the source position of the last checkpoint written (committed once the
        # transaction that wrote it is)
        self.source_position = 0

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
        row = await self._lock_checkpoint(conn)
        self._check_identity(row["stream"], row["stream_created"])
        checkpoint = int(row["seq"])
        if after is not None and checkpoint < after:
            raise OutOfOrder(after, checkpoint)
        ordered = [
            item for item in sorted(items, key=lambda item: item[0])
            if item[0] > checkpoint  # at or below: redelivered, already folded
        ]  # fmt: skip
        if not ordered:
            return checkpoint
        fresh = [self._origin(item) for item in ordered]
        if isolate:
            await self._bisect(conn, fresh)
        else:
            await fold_batch(conn, fresh, part=self.part)
        checkpoint = ordered[-1][0]
        await self._commit_position(conn, checkpoint, fresh[-1][0])
        return int(checkpoint)

    def _origin(self, item: Item | Entry) -> Raw:
        """What the fold sees: the item itself, or through a view its origin sequence and
        subject in the event stream."""
        if not self.sourced:
            return (item[0], item[1], item[2])
        seq, subject = source_of(item[3] if len(item) > 3 else None)  # type: ignore[misc]
        return (seq, subject, item[2])

    async def _lock_checkpoint(self, conn: asyncpg.Connection) -> asyncpg.Record:
        """The shared projector lock, then this checkpoint's row locked FOR UPDATE: batches
        of one partition are serialised by the row (created first if missing, without a
        race between two replicas), other partitions fold alongside."""
        if self.lock_key is not None:
            await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", self.lock_key)
        await conn.execute(
            "INSERT INTO projection_checkpoints (name, seq) VALUES ($1, 0)"
            " ON CONFLICT (name) DO NOTHING",
            self.name,
        )
        row = await conn.fetchrow(
            "SELECT seq, source_seq, stream, stream_created FROM projection_checkpoints"
            " WHERE name = $1 FOR UPDATE",
            self.name,
        )
        assert row is not None
        return row

    async def _commit_position(self, conn: asyncpg.Connection, seq: int, source: int) -> None:
        """Write the checkpoint (and its stream binding); NOTIFY the position readers see."""
        await conn.execute(
            """
            UPDATE projection_checkpoints
            SET seq = $2, source_seq = $3,
                stream = coalesce($4, stream), stream_created = coalesce($5, stream_created)
            WHERE name = $1
            """,
            self.name,
            seq,
            source if self.sourced else seq,
            self.stream.name if self.stream else None,
            self.stream.created if self.stream else None,
        )
        self.source_position = source if self.sourced else seq
        if self.notify:
            payload = notify_payload(self.part if self.sourced else None,
                                     source if self.sourced else seq)
            await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, payload)

    async def advance_idle(self, position: int, source: int) -> bool:
        """An idle partition's position keeps up with the stream: with this projector's
        reader at view sequence `position`, holding nothing, and every message of its
        partition up to view sequence L folded, `source` (the origin sequence of view
        message L) is covered too (the ordering argument: docs/projector.md). Moves
        `source_seq` up to it when the committed checkpoint is that position; returns
        whether it moved."""
        async with self.pool.acquire() as conn, conn.transaction():
            return await self.advance_in_transaction(conn, position, source)

    async def advance_in_transaction(
        self, conn: asyncpg.Connection, position: int, source: int
    ) -> bool:
        row = await self._lock_checkpoint(conn)
        self._check_identity(row["stream"], row["stream_created"])
        if int(row["seq"]) != position or (row["source_seq"] or 0) >= source:
            return False
        await self._commit_position(conn, position, source)
        return True

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
        state = State(part=self.part)
        poison(state, seq, subject, data, error)
        await write(conn, state)


async def fold_batch(conn: asyncpg.Connection, items: Sequence[Raw], *, part: int = 0) -> State:
    """Decode, load what the batch needs, fold it in stream order, write the changes
    (the running step means of partition `part`)."""
    batch = Batch(items)
    state = batch.fold_into(await load(conn, batch.keys, part))
    await write(conn, state)
    return state
