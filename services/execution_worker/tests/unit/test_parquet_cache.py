"""The Parquet cache's bookkeeping over real files: bound, in-use files, close."""

from __future__ import annotations

import os

from runstream.execution_worker.parquet_cache import ParquetCache


def _write(cache: ParquetCache, digest: str, size: int) -> str:
    """A copy of `size` bytes of `digest`, written where the cache says (as the child does)."""
    with cache.claim(digest) as path:
        assert path is not None
        with open(path, "wb") as f:
            f.write(b"x" * size)
    return path


def test_a_copy_evicted_while_a_query_uses_it_stays_until_that_query_ends() -> None:
    cache = ParquetCache(max_bytes=150)
    a = _write(cache, "a", 100)
    with cache.use("a") as using:
        assert using == a
        _write(cache, "b", 100)  # over the bound: a is evicted
        assert "a" not in cache and "b" in cache
        assert os.path.exists(a), "still being read"
    assert not os.path.exists(a)
    cache.close()


def test_a_copy_larger_than_the_bound_is_not_kept() -> None:
    cache = ParquetCache(max_bytes=50)
    path = _write(cache, "a", 100)
    assert "a" not in cache and not os.path.exists(path) and cache.held_bytes == 0
    cache.close()


def test_one_digest_is_written_by_one_query_at_a_time() -> None:
    cache = ParquetCache(max_bytes=1000)
    with cache.claim("a") as first, cache.claim("a") as second:
        assert first is not None and second is None
    with cache.claim("a") as third:
        assert third is not None, "nothing was written: the next query tries again"
    assert "a" not in cache
    cache.close()


def test_closing_deletes_the_directory_and_every_copy() -> None:
    cache = ParquetCache(max_bytes=1000)
    path = _write(cache, "a", 10)
    directory = cache.directory
    assert directory is not None and os.path.exists(path)
    cache.close()
    assert not os.path.exists(directory) and len(cache) == 0 and cache.held_bytes == 0
