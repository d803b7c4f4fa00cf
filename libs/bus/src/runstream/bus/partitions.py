"""Partitioned views of the stream: every session's events in one of P partitions.

NATS does the partitioning. A second stream, the *view* (`<stream>_P<P>`), sources the
event stream through a subject transform that puts the partition of the session id in
front: `<prefix>.<sid>.…` is stored as `<prefix>_p.<partition>.<sid>.…`, where
`partition = {{partition(P,1)}}` (FNV-1a of the session id, modulo P). A reader of
partition k filters `<prefix>_p.<k>.>`: its own ordered view, every session of k in
stream order. Each sourced message carries `Nats-Stream-Source`, naming the event
stream's sequence and subject, so a fold keys rows by the event's own sequence whatever
view it came through.

`partition_of` computes the same function in Python, for readers that need to know
which partition holds a session (its position); a test checks it against the server.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import nats.js.errors
from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

from runstream.contracts import partition_of

__all__ = [
    "partition_filter", "partition_of", "provision_view", "source_of", "view_config",
    "view_name", "view_prefix",
]  # fmt: skip


def view_name(stream: str, partitions: int) -> str:
    return f"{stream}_P{partitions}"


def view_prefix(prefix: str) -> str:
    return f"{prefix}_p"


def partition_filter(prefix: str, partition: int) -> str:
    return f"{view_prefix(prefix)}.{partition}.>"


def view_config(
    stream: str, prefix: str, partitions: int, *, replicas: int = 1, max_age_s: float = 0
) -> api.StreamConfig:
    transform = api.SubjectTransform(
        src=f"{prefix}.*.>",
        dest=f"{view_prefix(prefix)}.{{{{partition({partitions},1)}}}}.{{{{wildcard(1)}}}}.>",
    )
    return api.StreamConfig(
        name=view_name(stream, partitions),
        description=f"{stream} in {partitions} partitions by session (sourced)",
        sources=[api.StreamSource(name=stream, subject_transforms=[transform])],
        storage=api.StorageType.FILE,
        num_replicas=replicas,
        max_age=max_age_s or None,
        # The event stream already refused duplicates; a copy sourced late must not be
        # taken for one here.
        duplicate_window=0.1,  # the least the server takes
        # An idle partition reads the origin of the view's last message by direct get.
        allow_direct=True,
    )


async def provision_view(
    js: JetStreamContext, stream: str, prefix: str, partitions: int, *,
    replicas: int = 1, max_age_s: float = 0,
) -> api.StreamInfo:
    """Create the view for `partitions`, or bring it to the configured settings."""
    config = view_config(stream, prefix, partitions, replicas=replicas, max_age_s=max_age_s)
    try:
        await js.stream_info(config.name or "")
    except NotFoundError:
        with contextlib.suppress(nats.js.errors.BadRequestError):  # another was first
            return await js.add_stream(config)
    return await js.update_stream(config)


async def remove_other_views(js: JetStreamContext, stream: str, partitions: int) -> list[str]:
    """Delete the views of `stream` for any partition count but `partitions` (all of them
    when 1): a view copies every event, and one left from an earlier P is never read
    again. Returns the names removed."""
    keep = view_name(stream, partitions) if partitions > 1 else None
    removed = []
    for name in await _stream_names(js):
        rest = name.removeprefix(f"{stream}_P")
        if name != rest and rest.isdigit() and name != keep:
            with contextlib.suppress(NotFoundError):  # another removed it first
                await js.delete_stream(name)
                removed.append(name)
    return removed


async def _stream_names(js: JetStreamContext) -> list[str]:
    names: list[str] = []
    while page := await js.streams_info(offset=len(names)):  # the server pages by 256
        names += [info.config.name or "" for info in page]
        if len(page) < 256:
            break
    return names


def source_of(headers: Mapping[str, str] | None) -> tuple[int, str]:
    """(sequence, subject) in the event stream of a message read through a view."""
    value = (headers or {}).get("Nats-Stream-Source", "")
    parts = value.split(" ")
    if len(parts) < 5 or not parts[1].isdigit():
        raise ValueError(f"not a sourced message: Nats-Stream-Source={value!r}")
    return int(parts[1]), parts[4]
