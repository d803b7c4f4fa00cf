"""Which replica folds which partitions: leases in a NATS KV bucket.

Every replica announces itself under `member.<id>` and holds the partitions it folds
under `part.<P>.<k>` (value: its id). The bucket's TTL (`ttl_s`, ~10 s) ages out the keys
of a replica that stopped renewing (killed, partitioned away). Every `renew_s` (~3 s) a
replica:

1. renews its announcement (`put`);
2. renews each lease it holds with `update(last=revision)` — a lease whose revision moved
   (another replica took it after it expired) is lost: its fold loop stops;
3. counts the live replicas and takes its share, ceil(P / replicas): it gives back
   (`delete(last=revision)`) what it holds beyond that, so a replica that joins finds
   partitions to claim, and claims (`create`, refused when the key exists) free
   partitions up to it.

Correctness never depends on a lease: two replicas folding one partition are serialised
by the partition's checkpoint row, and the second skips what the first folded. The lease
only spreads the work.
"""

from __future__ import annotations

import contextlib
import math
import secrets
import zlib

import nats.js.errors
import structlog
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue

logger = structlog.get_logger()


def bucket_name(stream: str) -> str:
    return f"{stream}_PROJECTOR_LEASES"


class Leases:
    """One replica's view of the lease bucket; `tick` returns the partitions it holds."""

    def __init__(
        self,
        js: JetStreamContext,
        stream: str,
        partitions: int,
        *,
        replica: str | None = None,
        ttl_s: float = 10.0,
        replicas: int = 1,
    ) -> None:
        self.js = js
        self.bucket = bucket_name(stream)
        self.partitions = partitions
        self.replica = replica or secrets.token_hex(6)
        self.ttl_s = ttl_s
        self.stream_replicas = replicas
        self.held: dict[int, int] = {}  # partition -> revision of our lease
        self._kv: KeyValue | None = None
        self.log = logger.bind(replica=self.replica, partitions=partitions)

    def _key(self, part: int) -> str:
        return f"part.{self.partitions}.{part}"

    async def kv(self) -> KeyValue:
        if self._kv is None:
            try:
                self._kv = await self.js.key_value(self.bucket)
            except nats.js.errors.BucketNotFoundError:
                self._kv = await self.js.create_key_value(api.KeyValueConfig(
                    bucket=self.bucket, history=1, ttl=self.ttl_s,
                    description="Runstream projector partition leases",
                    replicas=self.stream_replicas,
                ))  # fmt: skip
        return self._kv

    async def announce(self) -> None:
        """Say this replica is here (before claiming anything: replicas starting
        together then see each other and each claims its share, not all of it)."""
        kv = await self.kv()
        await kv.put(f"member.{self.replica}", self.replica.encode())

    async def tick(self) -> set[int]:
        """Renew, rebalance, claim; the partitions held afterwards."""
        kv = await self.kv()
        await self.announce()
        for part, revision in list(self.held.items()):
            try:
                self.held[part] = await kv.update(
                    self._key(part), self.replica.encode(), last=revision
                )
            except nats.js.errors.KeyWrongLastSequenceError:
                self.log.warning("projector.lease_lost", partition=part)
                del self.held[part]
        try:
            keys = await kv.keys()
        except nats.js.errors.NoKeysError:
            keys = []
        members = max(1, sum(1 for key in keys if key.startswith("member.")))
        share = math.ceil(self.partitions / members)
        taken = {key for key in keys if key.startswith(f"part.{self.partitions}.")}
        while len(self.held) > share:
            part = max(self.held)
            revision = self.held.pop(part)
            with contextlib.suppress(nats.js.errors.KeyWrongLastSequenceError):
                await kv.delete(self._key(part), last=revision)
            self.log.info("projector.lease_released", partition=part, share=share)
        # Start the search at a replica-dependent place: replicas starting together do
        # not all race for partition 0.
        start = zlib.crc32(self.replica.encode()) % self.partitions
        for offset in range(self.partitions):
            if len(self.held) >= share:
                break
            part = (start + offset) % self.partitions
            if part in self.held or self._key(part) in taken:
                continue
            try:
                self.held[part] = await kv.create(self._key(part), self.replica.encode())
            except nats.js.errors.KeyWrongLastSequenceError:
                continue
            self.log.info("projector.lease_claimed", partition=part, share=share)
        return set(self.held)

    async def release(self) -> None:
        """Give every lease (and the announcement) back: another replica takes over at
        once instead of after the TTL."""
        if self._kv is None:
            return
        for part, revision in list(self.held.items()):
            with contextlib.suppress(Exception):
                await self._kv.delete(self._key(part), last=revision)
        self.held.clear()
        with contextlib.suppress(Exception):
            await self._kv.delete(f"member.{self.replica}")
