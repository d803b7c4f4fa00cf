"""A light SSE load generator: many raw-socket SSE clients in one process.

`python -m tests.bench.sse_clients '<json config>'` opens `count` clients per
`[session_id, after_seq, count]` target on `GET /api/sessions/{sid}/events`, then
answers commands on stdin, one JSON line each on stdout:

- `status`: how many clients are connected / failed, receipts per tag, own RSS and CPU;
- `report <tag>`: per client, the (k, latency ns) of every `bench|<tag>|<k>|<t_ns>`
  log line it received (latency = receipt clock - t_ns, same host clock);
- `quit`: close every connection and exit.

A frame's receipt time is taken as soon as its bytes are read off the socket.
Each client also checks that SSE ids only ever increase (no duplicate, no reordering).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any


class Client(asyncio.Protocol):
    """One SSE client as a protocol: bytes are handled in the read callback itself, with no
    task to wake per read (the generator must cost less than the server it measures)."""

    def __init__(self, sid: str, request: bytes) -> None:
        self.sid = sid
        self.request = request
        self.headers_ok = False
        self.error: str | None = None
        self.last_id = 0
        self.order_errors = 0
        self.received: dict[bytes, list[tuple[int, int]]] = {}  # by tag
        self.transport: Any = None
        self.head = b""
        self.body = b""
        self.ready = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport  # uvloop's does not subclass asyncio.Transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        if not self.headers_ok:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self.head[:end], self.head[end + 4:]
            status = head.split(b" ", 2)[1]
            if status != b"200":
                self.fail(f"HTTP {status.decode()}: {head[:200]!r}")
                return
            self.headers_ok = True
            if not self.ready.done():
                self.ready.set_result(None)
        # The chunked framing is left in: a chunk-size line never looks like an SSE field
        # or a mark, and each frame starts on a line of its own. Only whole frames are read.
        # Plain `find`s rather than regular expressions: this runs for every receipt.
        body = self.body + data if self.body else data
        end = body.rfind(b"\n\n") + 2
        if end < 2:
            self.body = body
            return
        if end < len(body):
            chunk, self.body = body[:end], body[end:]
        else:
            chunk, self.body = body, b""
        at = chunk.find(b"id: ")  # (event JSON has no spaces: only the SSE field matches)
        while at >= 0:
            stop = chunk.find(b"\n", at)
            seq = int(chunk[at + 4 : stop])
            if seq <= self.last_id:
                self.order_errors += 1
            self.last_id = seq
            at = chunk.find(b"id: ", stop)
        at = chunk.find(b"bench|")
        while at >= 0:
            stop = chunk.find(b'"', at)
            _, tag, k, sent = chunk[at:stop].split(b"|")
            got = self.received.get(tag)
            if got is None:
                got = self.received[tag] = []
            got.append((int(k), now - int(sent)))
            at = chunk.find(b"bench|", stop)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(f"{type(exc).__name__}: {exc}" if exc else "stream ended")

    def fail(self, error: str) -> None:
        if self.error is None:
            self.error = error
        if not self.ready.done():
            self.ready.set_result(None)
        if self.transport is not None:
            self.transport.close()


async def run_client(client: Client, host: str, port: int, gate: asyncio.Semaphore) -> None:
    try:
        async with gate:
            await asyncio.get_running_loop().create_connection(lambda: client, host, port)
            await asyncio.wait_for(asyncio.shield(client.ready), 60)
    except Exception as exc:  # recorded and reported: the parent fails the benchmark
        client.fail(f"{type(exc).__name__}: {exc}")


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def main(config: dict[str, Any]) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    gate = asyncio.Semaphore(config.get("connect_concurrency", 64))
    clients: list[Client] = []
    tasks = []
    host, port = config["host"], config["port"]
    for sid, after_seq, count in config["targets"]:
        request = (
            f"GET /api/sessions/{sid}/events?after_seq={after_seq} HTTP/1.1\r\n"
            f"Host: {host}:{port}\r\nAuthorization: Bearer {config['token']}\r\n"
            "Accept: text/event-stream\r\n\r\n"
        ).encode()
        for _ in range(count):
            client = Client(sid, request)
            clients.append(client)
            tasks.append(asyncio.create_task(run_client(client, host, port, gate)))

    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)

    def reply(payload: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(payload) + "\n")
        sys.stdout.flush()

    while line := (await stdin.readline()).decode().strip():
        command, _, arg = line.partition(" ")
        if command == "status":
            received: dict[str, int] = {}
            for c in clients:
                for tag, items in c.received.items():
                    received[tag.decode()] = received.get(tag.decode(), 0) + len(items)
            errors = [c.error for c in clients if c.error]
            reply({
                "clients": len(clients),
                "connected": sum(c.headers_ok and not c.error for c in clients),
                "failed": len(errors), "errors": errors[:5], "received": received,
                "order_errors": sum(c.order_errors for c in clients), "rss_mb": rss_mb(),
                "cpu_s": sum(resource.getrusage(resource.RUSAGE_SELF)[:2]),
            })  # fmt: skip
        elif command == "report":
            reply({"clients": [[c.sid, c.received.get(arg.encode(), [])] for c in clients]})
        elif command == "quit":
            break
    for c in clients:
        if c.transport is not None:
            c.transport.close()
    for task in tasks:
        task.cancel()
    with contextlib.suppress(Exception):
        await asyncio.gather(*tasks, return_exceptions=True)
    reply({"bye": True})


if __name__ == "__main__":
    import uvloop  # as the gateway's server: the generator must not be the bottleneck

    uvloop.run(main(json.loads(sys.argv[1])))
