"""What every handler needs, built once in the app's lifespan."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from runstream.bus import Bus, SessionAggregate
from runstream.gateway.auth import Tokens
from runstream.gateway.errors import not_found, unavailable
from runstream.gateway.fanout import Hub
from runstream.gateway.settings import GatewaySettings
from runstream.store import ReadModels


class Recent:
    """Ids this process just created, with the stream sequence that created them.

    A read that finds nothing waits (bounded) for the projector to reach that sequence,
    so a read right after a write never answers 404 for what the write created.
    """

    def __init__(self, size: int = 50_000) -> None:
        self._seqs: OrderedDict[str, int] = OrderedDict()
        self._size = size

    def add(self, ident: str, seq: int) -> None:
        self._seqs[ident] = seq
        self._seqs.move_to_end(ident)
        while len(self._seqs) > self._size:
            self._seqs.popitem(last=False)

    def get(self, ident: str) -> int | None:
        return self._seqs.get(ident)


@dataclass
class Gateway:
    settings: GatewaySettings
    bus: Bus
    sessions: SessionAggregate
    models: ReadModels
    hub: Hub
    tokens: Tokens
    recent: Recent = field(default_factory=Recent)
    sample_object: tuple[str, dict[str, Any]] | None = None
    sample_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def caught_up(self, seq: int | None, session_id: str | None = None) -> None:
        """Wait (bounded) until the read models reflect `seq` for reads of `session_id`
        (its partition's position; None: every partition's, docs/read-models.md)."""
        if seq:
            await self.models.wait_for_seq(seq, self.settings.read_wait_s, session_id)

    async def session_for(self, owner: str, session_id: str, min_seq: int = 0) -> dict[str, Any]:
        """The owner's session, or 404 (also for another owner's session).

        `min_seq`: the caller has seen that stream position; wait (bounded) until the
        read models reflect it, so a read never goes back in time.
        """
        await self.caught_up(min_seq, session_id)
        session = await self.models.get_session(session_id)
        if session is None:
            seq = max(self.recent.get(session_id) or 0, min_seq)
            if seq:
                await self.caught_up(seq, session_id)
                session = await self.models.get_session(session_id)
        if session is None or session["owner"] != owner:
            raise not_found("session", session_id)
        return session

    async def check_session(self, owner: str, session_id: str) -> None:
        """404 unless the owner's session exists: one key lookup (a write needs no more;
        `session_for` reads the whole session in a snapshot)."""
        found = await self.models.session_owner(session_id)
        if found is None and (seq := self.recent.get(session_id)):
            await self.caught_up(seq, session_id)
            found = await self.models.session_owner(session_id)
        if found != owner:
            raise not_found("session", session_id)

    async def message_for(self, owner: str, message_id: str, min_seq: int = 0) -> dict[str, Any]:
        """The owner's message, or 404. Its position is its session's: read it first to
        learn the session, then wait (bounded) for that partition to reach `min_seq`."""
        message = await self.models.get_message(message_id)
        if message is not None and message["as_of_seq"] < min_seq:
            await self.caught_up(min_seq, message["session_id"])
            message = await self.models.get_message(message_id)
        if message is None:
            seq = max(self.recent.get(message_id) or 0, min_seq)
            if seq:
                await self.caught_up(seq)  # its session is unknown: every partition's
                message = await self.models.get_message(message_id)
        if message is None or message["owner"] != owner:
            raise not_found("message", message_id)
        return message

    async def chart_task_for(self, owner: str, task_id: str, min_seq: int = 0) -> dict[str, Any]:
        task = await self.models.get_chart_task(task_id)
        if task is not None and task["as_of_seq"] < min_seq:
            await self.caught_up(min_seq, task["session_id"])
            task = await self.models.get_chart_task(task_id)
        if task is None:
            seq = max(self.recent.get(task_id) or 0, min_seq)
            if seq:
                await self.caught_up(seq)
                task = await self.models.get_chart_task(task_id)
        if task is None or task["owner"] != owner:
            raise not_found("chart task", task_id)
        return task


def gateway_of(state: Any) -> Gateway:
    gw = getattr(state, "gateway", None)
    if gw is None:
        raise unavailable("gateway", "the gateway is starting or stopping")
    return gw  # type: ignore[no-any-return]
