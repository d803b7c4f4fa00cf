"""`runstream status`: the stream, its consumers, and how far the projector has folded."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
from nats.js.errors import NotFoundError

from runstream.bus import Bus, list_consumers
from runstream.cli.settings import CliSettings
from runstream.store import ReadModels, create_pool


def _ago(when: datetime | None) -> str:
    if when is None:
        return "never"
    seconds = (datetime.now(UTC) - when).total_seconds()
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


async def projector_checkpoint(settings: CliSettings) -> int | None:
    """How far the projector has folded — with partitions, the least position of all
    of them (every event up to it is folded in every partition); None when Postgres or
    the table is not there."""
    try:
        pool = await create_pool(settings.database_url, schema=settings.db_schema,
                                 min_size=1, max_size=1, connect_timeout=3)
    except Exception:
        return None
    try:
        models = ReadModels(pool, partitions=settings.partitions)
        return await models.checkpoint()
    except asyncpg.PostgresError:
        return None
    finally:
        await pool.close()


async def collect(settings: CliSettings) -> dict[str, Any]:
    async with Bus.connect(settings.bus(), name="runstream-status") as bus:
        try:
            info = await bus.js.stream_info(bus.stream)
        except NotFoundError:
            return {"stream": None}
        consumers = await list_consumers(bus, settings.partitions)
    state = info.state
    rows = [{
        "name": c.name, "kind": c.kind, "ephemeral": c.ephemeral, "filter": c.filter,
        "pending": c.pending, "ack_pending": c.ack_pending, "redelivered": c.redelivered,
        "waiting_pulls": c.waiting, "delivered_seq": c.delivered_seq,
        "last_active": c.last_active, "stream": c.stream,
    } for c in consumers]
    checkpoint = await projector_checkpoint(settings)
    return {
        "stream": {
            "name": info.config.name,
            "messages": state.messages,
            "bytes": state.bytes,
            "first_seq": state.first_seq,
            "last_seq": state.last_seq,
            "consumers": state.consumer_count,
        },
        "consumers": rows,
        "checkpoint": checkpoint,
        "lag": None if checkpoint is None else max(state.last_seq - checkpoint, 0),
    }


def render(report: dict[str, Any], nats_url: str) -> str:
    stream = report["stream"]
    if stream is None:
        return f"no stream on {nats_url} (has `runstream up` or the projector run yet?)"
    lines = [
        f"stream {stream['name']} on {nats_url}",
        f"  messages {stream['messages']}  bytes {_size(stream['bytes'])}  "
        f"first seq {stream['first_seq']}  last seq {stream['last_seq']}",
        "",
        f"consumers ({len(report['consumers'])}; ephemeral ones belong to one process and "
        "vanish with it):",
        f"  {'name':<28}{'kind':<27}{'pending':>9}{'ack pend':>10}{'redeliv':>9}{'pulls':>7}"
        "  last active",
    ]
    for c in report["consumers"]:
        kind = f"ephemeral {c['kind']}" if c["ephemeral"] else c["kind"]
        if c["stream"] != stream["name"]:  # a partitioned projector's, on the view stream
            kind += " (view)"
        lines.append(
            f"  {c['name']:<28}{kind:<27}{c['pending']:>9}{c['ack_pending']:>10}"
            f"{c['redelivered']:>9}{c['waiting_pulls']:>7}  {_ago(c['last_active'])}"
        )
    live = [c["name"] for c in report["consumers"]
            if c["waiting_pulls"] > 0 and not c["ephemeral"]]
    lines.append("")
    lines.append(
        "workers polling now: " + (", ".join(live) if live else "none")
        + "  (a consumer with waiting pull requests has at least one live worker)"
    )
    if report["checkpoint"] is None:
        lines.append("projector: no checkpoint readable in Postgres")
    else:
        lines.append(
            f"projector: checkpoint {report['checkpoint']} of {stream['last_seq']} "
            f"(lag {report['lag']})"
        )
    return "\n".join(lines)
