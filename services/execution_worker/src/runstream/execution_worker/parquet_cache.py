"""Parquet copies of CSV datasets, by content digest, in a private temp directory.

The first query on a CSV digest has its sandbox child write the table it loaded to a
Parquet file (before the child's lock-down); later queries on that digest hand the
child that file, so the CSV is not parsed again. See docs/workers.md.

At most one query writes the copy of a digest at a time (`claim`); a file in use by a
query (`use`) is deleted only once that query is done, even if evicted meanwhile. The
directory is made on first claim and removed by `close()` (or at interpreter exit).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Iterator

import structlog

logger = structlog.get_logger()

DEFAULT_PARQUET_CACHE_BYTES = 1024 * 1024 * 1024


class ParquetCache:
    """Parquet file paths by digest, least recently used out, at most `max_bytes` on disk
    (plus files evicted while still in use). `max_bytes=0` keeps nothing: no copy is
    ever written. `written` counts the copies kept."""

    def __init__(self, max_bytes: int = DEFAULT_PARQUET_CACHE_BYTES) -> None:
        self.max_bytes = max(0, max_bytes)
        self.held_bytes = 0
        self.written = 0
        self._held: OrderedDict[str, tuple[str, int]] = OrderedDict()  # digest -> path, size
        self._writing: set[str] = set()
        self._users: dict[str, int] = {}  # path -> queries using it now
        self._doomed: set[str] = set()  # evicted while in use: deleted by the last user
        self._dir: str | None = None
        self._finalizer: weakref.finalize[..., ParquetCache] | None = None

    def __contains__(self, digest: object) -> bool:
        return digest in self._held

    def __len__(self) -> int:
        return len(self._held)

    @property
    def directory(self) -> str | None:
        return self._dir

    def path_of(self, digest: str) -> str | None:
        held = self._held.get(digest)
        return held[0] if held is not None else None

    @contextlib.contextmanager
    def use(self, digest: str) -> Iterator[str | None]:
        """The copy of `digest` if one is kept, held on disk until the block ends."""
        held = self._held.get(digest) if digest else None
        if held is not None and not os.path.exists(held[0]):
            self.forget(digest)  # removed under us (a temp cleaner): parse the CSV again
            held = None
        if held is None:
            yield None
            return
        self._held.move_to_end(digest)
        path = held[0]
        self._users[path] = self._users.get(path, 0) + 1
        try:
            yield path
        finally:
            self._users[path] -= 1
            if not self._users[path]:
                del self._users[path]
                if path in self._doomed:
                    self._doomed.discard(path)
                    _unlink(path)

    @contextlib.contextmanager
    def claim(self, digest: str) -> Iterator[str | None]:
        """A fresh path for this query's child to write the copy of `digest` to, or None
        when the cache is off, the copy is kept already or another query is writing it.
        The file found there when the block ends is kept; a missing one is not."""
        if not digest or not self.max_bytes or digest in self._held or digest in self._writing:
            yield None
            return
        try:
            path = os.path.join(self._directory(), f"{uuid.uuid4().hex}.parquet")
        except OSError as exc:  # no room for even a directory: queries go on from the CSV
            logger.warning("parquet_cache.unavailable", error=repr(exc))
            yield None
            return
        self._writing.add(digest)
        try:
            yield path
        finally:
            self._writing.discard(digest)
            _unlink(path + ".part")  # a child killed mid-copy
            self._keep(digest, path)

    def forget(self, digest: str) -> None:
        """Drop the copy of `digest` (one that could not be loaded): the next query on
        it loads the CSV and writes a new one."""
        held = self._held.pop(digest, None)
        if held is not None:
            self.held_bytes -= held[1]
            self._drop(held[0])

    def _drop(self, path: str) -> None:
        if path in self._users:
            self._doomed.add(path)
        else:
            _unlink(path)

    def _keep(self, digest: str, path: str) -> None:
        try:
            size = os.stat(path).st_size
        except OSError:
            return  # not written: the next query on this digest tries again
        if size > self.max_bytes:
            _unlink(path)
            return
        self._held[digest] = (path, size)
        self.held_bytes += size
        self.written += 1
        while self.held_bytes > self.max_bytes:
            old, (old_path, old_size) = self._held.popitem(last=False)
            self.held_bytes -= old_size
            logger.debug("parquet_cache.evicted", digest=old, bytes=old_size)
            self._drop(old_path)

    def _directory(self) -> str:
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="rs-parquet-")
            self._finalizer = weakref.finalize(self, shutil.rmtree, self._dir, True)
        return self._dir

    def close(self) -> None:
        """Delete every copy and the directory; the cache is empty afterwards."""
        self._held.clear()
        self.held_bytes = 0
        if self._finalizer is not None:
            self._finalizer()
        self._dir, self._finalizer = None, None


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
