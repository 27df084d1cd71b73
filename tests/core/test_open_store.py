"""`open_store` picks the implementation from the URL; what needs no server is checked here."""

from __future__ import annotations

import asyncio

import pytest

from paddock_core import AppendAudit, AuditEvent, SqliteStore, StoreError, open_store
from paddock_core._mongo import MongoStore


@pytest.mark.parametrize(
    ("url", "database"),
    [
        ("mongodb://db.internal:27017/audit?replicaSet=rs0", "audit"),
        ("mongodb://a:27017,b:27017/?replicaSet=rs0", "paddock"),
        ("mongodb://localhost", "paddock"),
        ("mongodb+srv://paddock:p%40ss@cluster0.example.net/ledger", "ledger"),
    ],
)
def test_mongodb_urls_name_the_database(url: str, database: str) -> None:
    store = open_store(url)  # nothing is contacted (or resolved) before open()
    assert isinstance(store, MongoStore) and store.database == database


def test_sqlite_and_unknown_urls() -> None:
    assert isinstance(open_store("sqlite:///tmp/x.db"), SqliteStore)
    with pytest.raises(StoreError, match="unsupported"):
        open_store("postgresql://localhost/paddock")


def test_an_unreachable_mongodb_fails_open_with_a_store_error() -> None:
    async def body() -> None:
        store = open_store("mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=300")
        with pytest.raises(StoreError, match="cannot open the MongoDB store"):
            await store.open()
        with pytest.raises(StoreError, match="not open"):
            await store.apply([AppendAudit(AuditEvent(org_id="o", actor="a", type="t"))])

    asyncio.run(body())
