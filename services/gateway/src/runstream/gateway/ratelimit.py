"""Rate limits, shared by every gateway replica: per owner for writes, per client address
for the routes that need no token.

Litestar's `RateLimitConfig` says who is counted (`identifier_for_request`), which routes
(`check_throttle_handler`, from the handler's `opt`), the limit and the `RateLimit-*`
headers. The counts live in a JetStream KV bucket (`KVStore`, a Litestar `Store`), so a
client spreading requests over replicas meets one limit. Litestar's middleware reads a
history and writes it back, which two replicas can interleave, and keeps one timestamp per
request; `SharedRateLimit` keeps a count per fixed window instead and adds to it with a
compare-and-set on the key, retried on a race, so no hit is lost.

One KV round trip per hit in the common case: each process remembers the revision and
window it last wrote or read per key, and writes the next count blind, expecting that
revision. Only when another replica wrote in between (a wrong-last-sequence answer) does
it read the key and count again.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import msgspec
import structlog
from litestar.middleware.rate_limit import (
    DURATION_VALUES,
    DurationUnit,
    RateLimitConfig,
    RateLimitMiddleware,
)
from litestar.stores.base import StorageObject, Store
from litestar.types import Message, Receive, Scope, Send
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from runstream.gateway.errors import ApiError, unavailable_dependency

logger = structlog.get_logger()

Policy = Literal["writes", "public"]
WRITES: dict[str, Any] = {"rate_limit": "writes"}  # a handler's `opt`: counted per owner
STORE = "rate_limits"
# A limiter must not slow a request down nor fail it: past this, or with NATS away, the
# request goes through uncounted (and a warning says so).
HIT_TIMEOUT_S = 0.5
# Keys whose last revision a process remembers; past this the least recently counted go.
KNOWN_KEYS = 100_000


class Window(msgspec.Struct, frozen=True):
    """One key's fixed window: requests counted so far, and when it ends (Unix time)."""

    count: int
    reset: int


_window = msgspec.json.Decoder(Window)
_json = msgspec.json.Encoder()


class KVStore(Store):
    """A Litestar `Store` in a JetStream KV bucket (opened in the app's lifespan).

    Keys are hashed (KV keys allow few characters; owners and addresses stay private).
    The bucket's TTL drops idle keys; `StorageObject` carries a key's own expiry.
    """

    def __init__(self, bucket: str, ttl_s: float) -> None:
        self.bucket = bucket
        self.ttl_s = ttl_s
        self._kv: KeyValue | None = None
        # Per key: the hits waiting to be counted, and the task counting them (None: a
        # caller is counting its own hit).
        self._queued: dict[str, list[asyncio.Future[tuple[Window, bool]]]] = {}
        self._drainers: dict[str, asyncio.Task[None] | None] = {}
        # Per key: the revision this process last wrote or read, and the window it held.
        self._known: dict[str, tuple[int, Window | None]] = {}

    async def open(self, js: JetStreamContext) -> None:
        # Memory storage: counts need not outlive a NATS restart.
        self._kv = await js.create_key_value(KeyValueConfig(
            bucket=self.bucket, history=1, ttl=self.ttl_s, storage=StorageType.MEMORY,
            description="Runstream gateway rate-limit counts"))

    @property
    def kv(self) -> KeyValue:
        if self._kv is None:
            raise RuntimeError("the rate-limit store is not open yet")
        return self._kv

    @staticmethod
    def _key(key: str) -> str:
        return hashlib.blake2b(key.encode(), digest_size=16).hexdigest()

    async def _entry(self, key: str) -> tuple[StorageObject | None, int]:
        """The stored object (None when absent or expired) and its revision (0: none)."""
        try:
            entry = await self.kv.get(self._key(key))
        except KeyNotFoundError as exc:  # also a deleted or purged key: its marker's revision
            return None, int(getattr(exc.entry, "revision", None) or 0)
        revision = int(entry.revision or 0)
        if not entry.value:
            return None, revision
        obj = StorageObject.from_bytes(entry.value)
        return (None if obj.expired else obj), revision

    async def set(self, key: str, value: str | bytes,
                  expires_in: int | timedelta | None = None) -> None:
        data = value.encode() if isinstance(value, str) else value
        self._known.pop(key, None)
        await self.kv.put(self._key(key), StorageObject.new(data, expires_in).to_bytes())

    async def get(self, key: str, renew_for: int | timedelta | None = None) -> bytes | None:
        obj, _ = await self._entry(key)
        if obj is None:
            return None
        if renew_for and obj.expires_at:
            await self.set(key, obj.data, renew_for)
        return obj.data

    async def delete(self, key: str) -> None:
        self._known.pop(key, None)
        await self.kv.delete(self._key(key))

    async def delete_all(self) -> None:
        self._known.clear()
        await self.kv.purge_deletes(olderthan=-1)
        for key in await self._keys():
            await self.kv.purge(key)

    async def _keys(self) -> list[str]:
        try:
            return list(await self.kv.keys())
        except Exception as exc:  # nats-py raises NoKeysError for an empty bucket
            if type(exc).__name__ == "NoKeysError":
                return []
            raise

    async def exists(self, key: str) -> bool:
        return (await self._entry(key))[0] is not None

    async def expires_in(self, key: str) -> int | None:
        obj, _ = await self._entry(key)
        return obj.expires_in if obj is not None and obj.expires_at else None

    async def hit(self, key: str, limit: int, window_s: int) -> tuple[Window, bool]:
        """Count one request against `limit` per window: (the window, whether it fits).

        Hits on one key in this process are counted together: a hit on a key nobody in
        this process is counting counts itself, at once, in the caller's task; hits that
        arrive meanwhile queue, and one drainer task per key then takes everything
        queued so far and adds it to the shared window in one compare-and-set — a burst
        of N requests from one owner costs a few writes, not N (nor N retry storms: one
        CAS per hit had 128 concurrent hits of one owner retrying 70 times each). Across
        replicas the compare-and-set still decides: a concurrent write from another
        replica makes this one fail, and the batch is counted again on the fresh value.
        """
        if key in self._drainers:  # being counted: join the queue
            fut: asyncio.Future[tuple[Window, bool]] = (
                asyncio.get_running_loop().create_future())
            self._queued.setdefault(key, []).append(fut)
            return await fut
        self._drainers[key] = None
        try:
            return (await self._count(key, 1, limit, window_s))[0]
        finally:
            # Also when this caller gave up waiting: whoever queued meanwhile is counted.
            if key in self._queued:
                self._drainers[key] = asyncio.create_task(self._drain(key, limit, window_s))
            else:
                del self._drainers[key]

    async def _drain(self, key: str, limit: int, window_s: int) -> None:
        try:
            while batch := self._queued.pop(key, None):
                waiting = [fut for fut in batch if not fut.done()]  # callers still there
                if not waiting:
                    continue
                try:
                    results = await self._count(key, len(waiting), limit, window_s)
                except Exception as exc:
                    for fut in waiting:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                for fut, result in zip(waiting, results, strict=True):
                    if not fut.done():
                        fut.set_result(result)
        finally:
            self._drainers.pop(key, None)

    async def _count(
        self, key: str, hits: int, limit: int, window_s: int
    ) -> list[tuple[Window, bool]]:
        """Add `hits` to the key's window (as many as fit) with one compare-and-set
        expecting the revision this process knows (0 for a key it has not met: a new
        one, usually); on a concurrent write, read the key and count again. Each hit's
        window and verdict, in order.

        A window known to be full refuses without a round trip: within a window a count
        only grows, whoever writes it."""
        revision, stored = self._known.get(key, (0, None))
        while True:
            now = int(time.time())
            window = stored if stored is not None and stored.reset > now else Window(
                count=0, reset=now + window_s)
            admitted = max(0, min(hits, limit - window.count))
            results = [
                (Window(count=window.count + i + 1, reset=window.reset), True)
                for i in range(admitted)
            ]
            full = Window(count=window.count + admitted, reset=window.reset)
            results += [(full, False)] * (hits - admitted)
            if not admitted:
                return results
            data = StorageObject.new(_json.encode(full), full.reset - now).to_bytes()
            try:
                revision = await self.kv.update(self._key(key), data, last=revision)
            except KeyWrongLastSequenceError:
                obj, revision = await self._entry(key)
                stored = None if obj is None else _window.decode(obj.data)
                self._remember(key, revision, stored)
                continue
            self._remember(key, revision, full)
            return results

    def _remember(self, key: str, revision: int, window: Window | None) -> None:
        known = self._known
        known.pop(key, None)  # to the end: the oldest are forgotten first
        known[key] = (revision, window)
        if len(known) > KNOWN_KEYS:
            del known[next(iter(known))]


@dataclass
class LimitConfig(RateLimitConfig):
    """`RateLimitConfig` for one policy of this gateway: which requests it counts and
    under which identity, both read straight from the ASGI scope (a `Request` per
    request and limiter was the largest part of a limiter's own cost)."""

    policy: Policy = "writes"
    applies: Callable[[Scope], bool] = lambda scope: False
    identity: Callable[[Scope], str] = lambda scope: "unknown"


class SharedRateLimit(RateLimitMiddleware):
    """Counts through `KVStore.hit` and answers 429 in the API's error shape."""

    config: LimitConfig

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        config = self.config
        if not config.applies(scope):
            await self.app(scope, receive, send)
            return
        store = config.get_store_from_app(scope["litestar_app"])
        assert isinstance(store, KVStore)
        try:
            # `asyncio.timeout`, not `wait_for`: no task per hit around the wait.
            async with asyncio.timeout(HIT_TIMEOUT_S):
                window, allowed = await store.hit(
                    self._cache_key(scope), self.max_requests, DURATION_VALUES[self.unit])
        except Exception as exc:
            if not isinstance(exc, TimeoutError) and unavailable_dependency(exc) is None:
                raise
            logger.warning("rate_limit.not_counted", policy=config.policy,
                           error=type(exc).__name__)
            await self.app(scope, receive, send)
            return
        headers = self._headers(window)
        if not allowed:
            raise ApiError(
                429, "rate_limited",
                f"too many requests: at most {self.max_requests} per {self.unit}",
                {"policy": config.policy, "limit": self.max_requests,
                 "window_s": DURATION_VALUES[self.unit]},
                headers={**headers,
                         "Retry-After": headers[config.rate_limit_reset_header_key]})
        raw = [(name.lower().encode("latin-1"), value.encode("latin-1"))
               for name, value in headers.items()]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                # No other layer sets these: appended, without a search per header.
                message["headers"] = [*message.get("headers", ()), *raw]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _cache_key(self, scope: Scope) -> str:
        """Litestar's key for the request (`cache_key_from_request`), from the scope."""
        key = f"{type(self).__name__}::{self.config.identity(scope)}"
        handler = scope["route_handler"]
        if getattr(handler, "is_mount", False):
            key += "::mount"
        if getattr(handler, "is_static", False):
            key += "::static"
        return key

    def _headers(self, window: Window) -> dict[str, str]:
        """The IETF draft's RateLimit-* headers, as Litestar names them."""
        c = self.config
        return {
            c.rate_limit_policy_header_key: f"{self.max_requests}; w={DURATION_VALUES[self.unit]}",
            c.rate_limit_limit_header_key: str(self.max_requests),
            c.rate_limit_remaining_header_key: str(max(0, self.max_requests - window.count)),
            c.rate_limit_reset_header_key: str(max(1, window.reset - int(time.time()))),
        }


def parse_limit(text: str) -> tuple[DurationUnit, int] | None:
    """`"120/minute"` -> ("minute", 120); `"off"` -> None."""
    if text.strip().lower() == "off":
        return None
    count, _, unit = text.partition("/")
    unit = unit.strip().lower()
    if not count.strip().isdigit() or int(count) < 1 or unit not in DURATION_VALUES:
        raise ValueError(f"rate limit {text!r}: use N/second|minute|hour|day, or off")
    return unit, int(count)  # type: ignore[return-value]


def _owner(scope: Scope) -> str:
    return f"owner:{scope.get('user')}"


def _address(scope: Scope) -> str:
    # The peer address (uvicorn's proxy headers set it behind a trusted ingress);
    # X-Forwarded-For is never read here: any client could write it.
    client = scope.get("client")
    return f"address:{client[0] if client else 'unknown'}"


def _is_write(scope: Scope) -> bool:
    return scope["route_handler"].opt.get("rate_limit") == "writes"


def _is_public(scope: Scope) -> bool:
    return bool(scope["route_handler"].opt.get("exclude_from_auth")) or (
        scope["path"].startswith("/schema"))


def limits(writes: str, public: str) -> list[LimitConfig]:
    """The configured policies (a policy set to `off` has none)."""
    configs = []
    for policy, text, who, which in (("writes", writes, _owner, _is_write),
                                     ("public", public, _address, _is_public)):
        rate = parse_limit(text)
        if rate is not None:
            configs.append(LimitConfig(
                rate_limit=rate, policy=policy, identity=who,  # type: ignore[arg-type]
                applies=which, middleware_class=SharedRateLimit, store=STORE))
    return configs


def window_s(*texts: str) -> int:
    """The longest window of the policies: how long the bucket keeps an idle key."""
    return max([DURATION_VALUES[r[0]] for r in map(parse_limit, texts) if r] or [60])
