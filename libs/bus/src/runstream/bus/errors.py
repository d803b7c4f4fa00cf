"""Bus errors, and the message-flow signals a handler raises to steer redelivery."""

from __future__ import annotations

from collections.abc import Iterator

import nats.errors
import nats.js.errors


class BusError(Exception):
    code = "bus_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ConcurrencyConflict(BusError):
    """The session aggregate kept moving under us for every retry."""

    code = "concurrency_conflict"


class LockHeld(BusError):
    """Another analysis holds the session lock."""

    code = "analysis_in_progress"

    def __init__(self, holder: str) -> None:
        super().__init__(f"analysis {holder} is still running in this session")
        self.holder = holder


class NotLockHolder(BusError):
    code = "not_lock_holder"

    def __init__(self, message_id: str, holder: str | None) -> None:
        super().__init__(f"{message_id} does not hold the session lock (holder: {holder})")
        self.holder = holder


class SessionNotFound(BusError):
    code = "session_not_found"


class EventTooLarge(BusError):
    """An event over the contract's size limits: refused before it reaches the stream."""

    code = "event_too_large"

    def __init__(self, detail: str, *, size: int, limit: int) -> None:
        super().__init__(detail)
        self.size = size
        self.limit = limit


class LogTextTooLarge(EventTooLarge):
    """A log line over LOG_TEXT_MAX_BYTES (`StepReporter.log` truncates instead)."""

    code = "log_text_too_large"


# --- message-flow signals: not domain errors -------------------------------------------
class Retry(Exception):
    """Transient failure: nak and let JetStream redeliver after `delay` seconds."""

    def __init__(self, reason: str, delay: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay = delay


class Reject(Exception):
    """Permanent failure of the delivery itself: terminate it (no redelivery)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- availability: NATS cannot serve right now -----------------------------------------
# Failures of the connection or of JetStream itself, as opposed to a request that is wrong
# (bad subject, unknown stream, wrong last sequence): retrying later can succeed.
_NATS_DOWN: tuple[type[BaseException], ...] = (
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.ConnectionDrainingError,
    nats.errors.NoServersError,
    nats.errors.NoRespondersError,
    nats.errors.StaleConnectionError,  # and UnexpectedEOF
    nats.errors.OutboundBufferLimitError,  # disconnected, and publishes are not buffered
    nats.errors.TimeoutError,  # and FlushTimeoutError, FetchTimeoutError
    nats.js.errors.ServiceUnavailableError,  # JetStream 503: not ready, no responders
    nats.js.errors.ServerError,
    nats.js.errors.NoStreamResponseError,  # the publish reached no stream (yet)
)


def nats_unavailable(exc: BaseException) -> bool:
    """True when `exc` means NATS or JetStream is down or not ready, not a bad request."""
    return isinstance(exc, _NATS_DOWN)


def exception_family(exc: BaseException, _depth: int = 0) -> Iterator[BaseException]:
    """`exc`, the members of an exception group, and what it was raised from or during:
    an outage often surfaces wrapped, or as the context of a later error."""
    if _depth > 8:
        return
    yield exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from exception_family(inner, _depth + 1)
    for linked in (exc.__cause__, exc.__context__):
        if linked is not None:
            yield from exception_family(linked, _depth + 1)
