"""Every `Store` implementation, behind one fixture, for the contract suite.

SQLite always runs (a file in the test's temp dir). MongoDB runs when `MONGODB_URL` names a
replica set, e.g. `mongodb://localhost:27017/?replicaSet=rs0`: each test gets its own database
`paddock_test_<pid>_<hex>`, dropped at teardown (its name is printed, so a failure shows it).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import pytest
from pymongo import AsyncMongoClient

from paddock_core import Store, open_store

_T = TypeVar("_T")

MONGODB_HOWTO = (
    "MongoDB contract tests need MONGODB_URL naming a replica set, e.g. "
    "MONGODB_URL='mongodb://localhost:27017/?replicaSet=rs0' pytest tests/core"
)


@dataclass(frozen=True)
class Backend:
    """Opens a fresh `Store` on the same data for each `run`, so a test can reopen it."""

    name: str
    url: str

    def run(self, body: Callable[[Store], Awaitable[_T]]) -> _T:
        """Open the store, await `body(store)` in a new event loop, close the store."""

        async def go() -> _T:
            store = open_store(self.url)
            await store.open()
            try:
                return await body(store)
            finally:
                await store.close()

        return asyncio.run(go())


def _with_database(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


async def _drop_database(url: str, database: str) -> None:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(url)
    try:
        await client.drop_database(database)
    finally:
        await client.close()


@pytest.fixture(params=["sqlite", "mongodb"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        yield Backend("sqlite", f"sqlite:///{tmp_path / 'paddock.db'}")
        return
    if not os.environ.get("MONGODB_URL"):
        pytest.skip(MONGODB_HOWTO)  # the only skip: no MongoDB server can run on these machines
    database = f"paddock_test_{os.getpid()}_{secrets.token_hex(4)}"
    url = _with_database(os.environ["MONGODB_URL"], database)
    print(f"MongoDB database for this test: {database}")
    try:
        yield Backend("mongodb", url)
    finally:
        asyncio.run(_drop_database(url, database))
