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
import re
import resource
import sys
import time
from pathlib import Path
from typing import Any

MARK = re.compile(rb"bench\|(\w+)\|(\d+)\|(\d+)")
SSE_ID = re.compile(rb"(?m)^id: ?(\d+)")


class Client:
    __slots__ = ("error", "headers_ok", "last_id", "order_errors", "received", "sid", "writer")

    def __init__(self, sid: str) -> None:
        self.sid = sid
        self.headers_ok = False
        self.error: str | None = None
        self.last_id = 0
        self.order_errors = 0
        self.received: dict[str, list[tuple[int, int]]] = {}
        self.writer: asyncio.StreamWriter | None = None


class Chunked:
    """Incremental HTTP/1.1 chunked-transfer decoder."""

    def __init__(self) -> None:
        self.raw = bytearray()
        self.left = 0  # data bytes of the current chunk still to come
        self.skip = 0  # bytes of the CRLF after a chunk still to drop

    def feed(self, data: bytes) -> bytes:
        self.raw += data
        out = bytearray()
        while self.raw:
            if self.skip:
                n = min(self.skip, len(self.raw))
                del self.raw[:n]
                self.skip -= n
                continue
            if self.left:
                take = min(self.left, len(self.raw))
                out += self.raw[:take]
                del self.raw[:take]
                self.left -= take
                if not self.left:
                    self.skip = 2
                continue
            end = self.raw.find(b"\r\n")
            if end < 0:
                break
            self.left = int(bytes(self.raw[:end]).split(b";")[0] or b"0", 16)
            del self.raw[: end + 2]
            if self.left == 0:  # the last chunk: the stream is over
                break
        return bytes(out)


async def run_client(
    client: Client, host: str, port: int, token: str, after_seq: int, gate: asyncio.Semaphore
) -> None:
    body = bytearray()
    decoder: Chunked | None = None
    try:
        async with gate:
            reader, writer = await asyncio.open_connection(host, port)
            client.writer = writer
            writer.write(
                f"GET /api/sessions/{client.sid}/events?after_seq={after_seq} HTTP/1.1\r\n"
                f"Host: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
                "Accept: text/event-stream\r\n\r\n".encode()
            )
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
            status = head.split(b" ", 2)[1]
            if status != b"200":
                client.error = f"HTTP {status.decode()}: {head[:200]!r}"
                return
            if b"transfer-encoding: chunked" in head.lower():
                decoder = Chunked()
            client.headers_ok = True
        while data := await reader.read(65536):
            now = time.time_ns()
            body += decoder.feed(data) if decoder is not None else data
            end = max(body.rfind(b"\n\n") + 2, body.rfind(b"\n\r\n") + 3)
            if end <= 2:
                continue
            chunk = bytes(body[:end])
            del body[:end]
            for m in SSE_ID.finditer(chunk):
                seq = int(m.group(1))
                if seq <= client.last_id:
                    client.order_errors += 1
                client.last_id = seq
            for m in MARK.finditer(chunk):
                tag = m.group(1).decode()
                client.received.setdefault(tag, []).append((int(m.group(2)), now - int(m.group(3))))
        if client.error is None:
            client.error = "stream ended"
    except Exception as exc:  # recorded and reported: the parent fails the benchmark
        client.error = f"{type(exc).__name__}: {exc}"


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
    for sid, after_seq, count in config["targets"]:
        for _ in range(count):
            client = Client(sid)
            clients.append(client)
            tasks.append(asyncio.create_task(run_client(
                client, config["host"], config["port"], config["token"], after_seq, gate
            )))  # fmt: skip

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
                    received[tag] = received.get(tag, 0) + len(items)
            errors = [c.error for c in clients if c.error]
            reply({
                "clients": len(clients),
                "connected": sum(c.headers_ok and not c.error for c in clients),
                "failed": len(errors), "errors": errors[:5], "received": received,
                "order_errors": sum(c.order_errors for c in clients), "rss_mb": rss_mb(),
                "cpu_s": sum(resource.getrusage(resource.RUSAGE_SELF)[:2]),
            })  # fmt: skip
        elif command == "report":
            reply({"clients": [[c.sid, c.received.get(arg, [])] for c in clients]})
        elif command == "quit":
            break
    for c in clients:
        if c.writer is not None:
            c.writer.close()
    for task in tasks:
        task.cancel()
    with contextlib.suppress(Exception):
        await asyncio.gather(*tasks, return_exceptions=True)
    reply({"bye": True})


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
