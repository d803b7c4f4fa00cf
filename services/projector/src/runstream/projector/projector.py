"""Apply a batch of stream messages to the read models in one transaction with the checkpoint.

The batch commits rows and checkpoint together and NOTIFYs `rs_projected`; the caller
acks after the commit. Sequences at or below the checkpoint are skipped, so redelivery
and a crash between commit and ack are no-ops.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import structlog

from runstream.contracts import DecodeError, decode
from runstream.projector.fold import Poison, Positions, fold_event
from runstream.store import NOTIFY_CHANNEL, PROJECTOR

logger = structlog.get_logger()

# pg_advisory_xact_lock key taken by every live batch and by rebuild's final swap ("RSPJ").
PROJECTOR_LOCK = 0x5253504A

Item = tuple[int, str, bytes]  # (stream seq, subject, raw data)

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

    async def apply_batch(self, items: Sequence[Item]) -> int:
        """Fold `items` in one transaction; returns the checkpoint after commit."""
        async with self.pool.acquire() as conn:
            try:
                async with conn.transaction():
                    return await self.apply_in_transaction(conn, items)
            except _DATA_ERRORS as exc:
                logger.warning("projector.batch_isolating", error=str(exc), size=len(items))
            # Again, one savepoint per event, to find the event at fault and poison it.
            async with conn.transaction():
                return await self.apply_in_transaction(conn, items, isolate=True)

    async def apply_in_transaction(
        self, conn: asyncpg.Connection, items: Sequence[Item], *, isolate: bool = False
    ) -> int:
        """The batch body, for a caller that already holds a transaction on `conn`."""
        if self.lock_key is not None:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", self.lock_key)
        checkpoint = await conn.fetchval(
            "SELECT seq FROM projection_checkpoints WHERE name = $1 FOR UPDATE", self.name
        )
        if checkpoint is None:
            await conn.execute(
                "INSERT INTO projection_checkpoints (name, seq) VALUES ($1, 0)", self.name
            )
            checkpoint = 0
        start = checkpoint
        # Isolating: every write stays inside its event's savepoint.
        positions = Positions(defer_logs=not isolate)
        for seq, subject, data in sorted(items, key=lambda item: item[0]):
            if seq <= checkpoint:
                continue  # redelivered: already folded
            await self._apply_one(conn, seq, subject, data, positions, isolate=isolate)
            checkpoint = seq
        if checkpoint != start:
            await positions.flush(conn)
            await conn.execute(
                "UPDATE projection_checkpoints SET seq = $2 WHERE name = $1",
                self.name,
                checkpoint,
            )
            if self.notify:
                await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, str(checkpoint))
        return int(checkpoint)

    async def _apply_one(
        self,
        conn: asyncpg.Connection,
        seq: int,
        subject: str,
        data: bytes,
        positions: Positions,
        *,
        isolate: bool,
    ) -> None:
        try:
            event = decode(data)
        except DecodeError as exc:
            await self._poison(conn, seq, subject, data, f"decode: {exc}")
            return
        try:
            if isolate:
                async with conn.transaction():  # a savepoint
                    await fold_event(conn, seq, subject, event, positions)
            else:
                await fold_event(conn, seq, subject, event, positions)
        except Poison as refused:  # the fold's decision: it wrote nothing for this event
            await self._poison(conn, seq, subject, data, refused.reason)
        except _DATA_ERRORS as exc:
            if not isolate:
                raise  # apply_batch retries with a savepoint per event to find the culprit
            await self._poison(conn, seq, subject, data, f"fold: {type(exc).__name__}: {exc}")

    async def _poison(
        self, conn: asyncpg.Connection, seq: int, subject: str, data: bytes, error: str
    ) -> None:
        logger.warning("projector.poison_event", seq=seq, subject=subject, error=error)
        await conn.execute(
            """
            INSERT INTO poison_events (seq, subject, data, error) VALUES ($1, $2, $3, $4)
            ON CONFLICT (seq) DO NOTHING
            """,
            seq,
            subject,
            data,
            error,
        )
