"""Real Redis for counter tests: required (a test fails, never skips, without it), one key
prefix per test, every key under it deleted at teardown."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis

REDIS_URL = os.environ.get("PADDOCK_REDIS_URL", "redis://127.0.0.1:6379")


def redis_client() -> redis.Redis:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis is required at {REDIS_URL} (PADDOCK_REDIS_URL): {exc}")
    return client


def keys_under(client: redis.Redis, prefix: str) -> list[bytes]:
    return list(client.scan_iter(match=f"{prefix}*", count=1000))


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A fresh key prefix; its keys are removed afterwards (the prefix is printed on failure)."""
    client = redis_client()
    prefix = f"paddock-test:{uuid.uuid4().hex[:12]}:"
    print(f"redis key prefix: {prefix}")
    yield prefix
    for key in keys_under(client, prefix):
        client.delete(key)
    client.close()
