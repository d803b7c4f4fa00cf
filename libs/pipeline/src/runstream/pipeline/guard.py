"""The per-message guard every pipeline worker asks before each step.

Was the message cancelled (stop quietly: the gateway settled it)? Does it still hold the
session lock (renew it; another holder means the message settles `expired`)?
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog

from runstream.bus import Bus, NotLockHolder, SessionAggregate
from runstream.bus.history import session_events
from runstream.contracts import AnalysisSettled, DeadLetter, ErrorInfo, SettledStatus

logger = structlog.get_logger()


class Stop(Exception):
    """Stop working on this message and ack it: it was cancelled, settled or taken over."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MessageGuard:
    """Cancel and lock checks for one analysis message."""

    def __init__(self, bus: Bus, session_id: str, message_id: str) -> None:
        self.bus = bus
        self.session_id = session_id
        self.message_id = message_id
        self.sessions = SessionAggregate(bus)
        self.log = logger.bind(session_id=session_id, message_id=message_id)

    async def cancel_requested(self) -> bool:
        subject = self.bus.subjects.message(self.session_id, self.message_id, "cancel_requested")
        return await self.bus.get_last_for_subject(subject) is not None

    async def settled(self) -> AnalysisSettled | None:
        """This message's terminal event, if the session subject holds one."""
        state = await self.sessions.load(self.session_id)
        last = state.event
        if isinstance(last, AnalysisSettled) and last.message_id == self.message_id:
            return last
        if state.lock is not None and state.lock.message_id == self.message_id:
            return None  # still holds the lock: cannot be settled
        for event in reversed(await session_events(self.bus, self.session_id)):
            if isinstance(event, AnalysisSettled) and event.message_id == self.message_id:
                return event
        return None

    async def check(self, stage: str) -> None:
        """Before a step: raise Stop when cancelled or the lock is gone; else renew it."""
        if await self.cancel_requested():
            raise Stop("cancel requested")
        try:
            await self.sessions.renew(self.session_id, self.message_id, stage=stage)
        except NotLockHolder as exc:
            await self._lost_lock(exc.holder)

    async def _lost_lock(self, holder: str | None) -> None:
        if await self.cancel_requested():
            raise Stop("cancel requested")
        if await self.settled() is not None:
            raise Stop("already settled")
        self.log.warning("lock.lost", holder=holder)
        await self.settle(
            "expired",
            error=ErrorInfo(code="lock_lost", message=f"the session lock is held by {holder}"),
        )
        raise Stop("lock lost")

    async def settle(
        self,
        status: SettledStatus,
        *,
        summary: str | None = None,
        error: ErrorInfo | None = None,
        dead_letter: DeadLetter | None = None,
    ) -> None:
        """Settle once: a message already settled (e.g. cancelled) is left as it is."""
        if status != "cancelled" and await self.settled() is not None:
            return
        await self.sessions.settle(
            self.session_id, self.message_id, status,
            summary=summary, error=error, dead_letter=dead_letter,
        )

    @contextlib.asynccontextmanager
    async def keep_renewed(self, stage: str, every_s: float | None = None) -> AsyncIterator[None]:
        """Renew the lock every lock_ttl/3 while a long step runs."""
        interval = every_s or max(1.0, self.sessions.lock_ttl.total_seconds() / 3)

        async def loop() -> None:
            while True:
                await asyncio.sleep(interval)
                try:
                    await self.sessions.renew(self.session_id, self.message_id, stage=stage)
                except NotLockHolder:
                    return  # the next check() decides what that means
                except Exception:
                    self.log.warning("lock.renew_failed", exc_info=True)

        task = asyncio.create_task(loop())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
