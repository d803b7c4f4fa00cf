"""JetStream for Runstream: connect, provision, publish, consume, the session aggregate."""

from runstream.bus.bus import Bus, Published, check_size, event_headers
from runstream.bus.consumer import (
    ConsumerSpec,
    Delivery,
    MaxDeliveries,
    MessageConsumer,
    ensure_consumer,
    watch_max_deliveries,
)
from runstream.bus.dataset_cache import DEFAULT_CACHE_BYTES, Dataset, DatasetCache
from runstream.bus.errors import (
    BusError,
    ConcurrencyConflict,
    EventTooLarge,
    LockHeld,
    LogTextTooLarge,
    NotLockHolder,
    Reject,
    Retry,
    SessionNotFound,
    exception_family,
    nats_unavailable,
)
from runstream.bus.history import read_subject, session_events
from runstream.bus.inventory import ConsumerKind, ConsumerRow, list_consumers
from runstream.bus.objects import delete_dataset, get_dataset, put_dataset
from runstream.bus.ordered import (
    Entry,
    Item,
    OrderedReader,
    ReaderLost,
    StreamIdentity,
    stream_identity,
)
from runstream.bus.session import Committed, SessionAggregate, SessionState
from runstream.bus.settings import BusSettings

__all__ = [
    "DEFAULT_CACHE_BYTES",
    "Bus",
    "BusError",
    "BusSettings",
    "Committed",
    "ConcurrencyConflict",
    "ConsumerKind",
    "ConsumerRow",
    "ConsumerSpec",
    "Dataset",
    "DatasetCache",
    "Delivery",
    "Entry",
    "EventTooLarge",
    "Item",
    "LockHeld",
    "LogTextTooLarge",
    "MaxDeliveries",
    "MessageConsumer",
    "NotLockHolder",
    "OrderedReader",
    "Published",
    "ReaderLost",
    "Reject",
    "Retry",
    "SessionAggregate",
    "SessionNotFound",
    "SessionState",
    "StreamIdentity",
    "check_size",
    "delete_dataset",
    "ensure_consumer",
    "event_headers",
    "exception_family",
    "get_dataset",
    "list_consumers",
    "nats_unavailable",
    "put_dataset",
    "read_subject",
    "session_events",
    "stream_identity",
    "watch_max_deliveries",
]
