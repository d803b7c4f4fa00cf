"""Every consumer on the stream, each marked durable or ephemeral: what `runstream
status` and `GET /api/stats` both list.

Durable consumers are the workers' (a name that outlives any process). Ephemeral ones
come and go with the process that made them and vanish on their own when it dies:
`reader` is an ordered pull reader (the projector, a rebuild), `replay` an ordered push
consumer reading history (a gateway catching an SSE or WebSocket client up, `runstream
tail`). The server lists at most 256 consumers per request; this pages through them all.

With partitioned projectors (P > 1) their readers are consumers of the view stream
`<stream>_P<P>` (runstream.bus.partitions): listed too, each row naming its stream (its
`delivered_seq` counts the view's messages, not the event stream's).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec
from nats.js.errors import NotFoundError

from runstream.bus.bus import Bus
from runstream.bus.partitions import view_name

ConsumerKind = Literal["durable", "reader", "replay"]
PAGE = 256  # the JetStream API's list limit


class ConsumerRow(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    kind: ConsumerKind
    ephemeral: bool
    filter: str
    pending: int
    ack_pending: int
    redelivered: int
    waiting: int
    delivered_seq: int
    last_active: datetime | None = None
    stream: str = ""


def _kind(config: object) -> ConsumerKind:
    if getattr(config, "durable_name", None):
        return "durable"
    return "replay" if getattr(config, "deliver_subject", None) else "reader"


async def list_consumers(bus: Bus, partitions: int = 1) -> list[ConsumerRow]:
    """Durable consumers first, then ephemeral ones; by stream, then name within each."""
    found = await _consumers_of(bus, bus.stream)
    if partitions > 1:
        try:
            found += await _consumers_of(bus, view_name(bus.stream, partitions))
        except NotFoundError:
            pass  # no projector has made the view yet
    return sorted(found, key=lambda r: (r.ephemeral, r.stream != bus.stream, r.name))


async def _consumers_of(bus: Bus, stream: str) -> list[ConsumerRow]:
    found: dict[str, ConsumerRow] = {}
    offset = 0
    while True:
        page = await bus.js.consumers_info(stream, offset=offset)
        for c in page:
            kind = _kind(c.config)
            delivered = c.delivered
            found[c.name] = ConsumerRow(
                name=c.name, kind=kind, ephemeral=kind != "durable", stream=stream,
                filter=c.config.filter_subject or ", ".join(c.config.filter_subjects or []),
                pending=c.num_pending or 0, ack_pending=c.num_ack_pending or 0,
                redelivered=c.num_redelivered or 0, waiting=c.num_waiting or 0,
                delivered_seq=(delivered.stream_seq or 0) if delivered else 0,
                last_active=delivered.last_active if delivered else None,
            )
        if len(page) < PAGE:
            break
        offset += len(page)
    return list(found.values())
