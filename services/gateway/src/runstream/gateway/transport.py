"""Live SSE frames written straight into the connection's transport.

After an SSE response has started, each frame the hub dispatches would otherwise cross a
queue, wake the stream's task, and travel down Litestar's streaming response and uvicorn's
ASGI `send` — per client, per frame: about 90 µs of CPU, most of a broadcast's cost. With
uvicorn's HTTP/1.1 protocol the response cycle behind `send` owns the connection's
transport and frames the body as chunks; once the stream is live, the hub writes each
frame's chunk (encoded once for every client) into that transport itself.

This relies on uvicorn's httptools protocol (`RequestResponseCycle`: `transport`,
`chunked_encoding`). Served any other way (h11, another server, an in-memory client),
`sink_of` finds no such cycle and the stream stays on the ASGI path: same frames, slower.
"""

from __future__ import annotations

from typing import Any

from runstream.gateway.fanout import Frame

# What a sink uses of the transport (asyncio's and uvloop's, which does not subclass
# asyncio.Transport).
TRANSPORT_API = ("write", "is_closing", "get_write_buffer_size")
# The server's own `send` of an HTTP request, before any middleware wrapped it.
RAW_SEND = "runstream.raw_send"


class TransportSink:
    """One started, chunked SSE response's transport."""

    __slots__ = ("_limit", "_transport")

    def __init__(self, transport: Any, limit: int) -> None:
        self._transport = transport
        self._limit = limit

    def send(self, frame: Frame) -> bool:
        transport = self._transport
        if transport.is_closing():
            return False
        transport.write(frame.sse_chunk())
        # More than `limit` bytes the client has not taken: it is too slow, drop it
        # rather than hold its backlog (the kernel's socket buffer is full before this).
        return transport.get_write_buffer_size() <= self._limit

    def gone(self) -> bool:
        return self._transport.is_closing()


def sink_of(scope: Any, limit: int) -> TransportSink | None:
    """The transport of this request's started chunked response, if uvicorn serves it."""
    cycle = getattr(scope.get(RAW_SEND), "__self__", None)
    transport = getattr(cycle, "transport", None)
    if (
        not all(callable(getattr(transport, name, None)) for name in TRANSPORT_API)
        or getattr(cycle, "chunked_encoding", None) is not True
        or not getattr(cycle, "response_started", False)
        or getattr(cycle, "response_complete", True)
    ):
        return None
    return TransportSink(transport, limit)
