"""Reading an org's audit chain out of SQLite for verification, fast.

Verifying means hashing each record's canonical encoding (paddock_core._audit). Built in
Python, that encoding cost more than the hash; here SQLite builds it in the query (the same
bytes: `json_quote` escapes exactly as `json.dumps(..., ensure_ascii=False)`, and a record
where they would differ is rechecked by the Python encoder before it counts as broken, see
`ChainVerifier.recheck`). And SQLite does that work with the GIL released, so pages are read by
two threads on their own connections at once, while the event loop hashes the page before.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import threading
from collections import deque
from collections.abc import AsyncGenerator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ._audit import ChainLink

__all__ = ["ChainReader"]

PAGE = 10_000
_THREADS = 1
_IN_FLIGHT = 3

_CANONICAL = (
    "CAST('{\"actor\":' || json_quote(actor) || ',\"data\":' || data"
    " || ',\"org_id\":' || json_quote(org_id) || ',\"prev_hash\":' || json_quote(prev_hash)"
    " || ',\"runner_id\":' || json_quote(runner_id) || ',\"seq\":' || seq"
    " || ',\"session_id\":' || json_quote(session_id) || ',\"time\":' || json_quote(time)"
    " || ',\"type\":' || json_quote(type) || '}' AS BLOB)"
)
_PAGE_SQL = (
    f"SELECT seq, prev_hash, hash, {_CANONICAL} FROM audit_events"
    " WHERE org_id = ? AND seq > ? AND seq <= ? ORDER BY seq"
)


class ChainReader:
    """Pages of `ChainLink`s by seq range, read in parallel, handed out in order. Its threads
    and connections are made on first use and closed by `close()`."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._executor: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=10000")
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    def _page(self, org_id: str, after: int, upto: int) -> list[ChainLink]:
        rows: list[ChainLink] = self._conn().execute(_PAGE_SQL, (org_id, after, upto)).fetchall()
        return rows

    async def pages(
        self, org_id: str, after_seq: int, head: int
    ) -> AsyncGenerator[list[ChainLink], None]:
        """Records with `after_seq < seq <= head`, in pages of up to `PAGE`."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(_THREADS, thread_name_prefix="paddock-chain")
        executor, loop = self._executor, asyncio.get_running_loop()
        starts = iter(range(after_seq, head, PAGE))
        pending: deque[asyncio.Future[list[ChainLink]]] = deque()

        def submit(count: int) -> None:
            for start in itertools.islice(starts, count):
                upto = min(start + PAGE, head)
                pending.append(loop.run_in_executor(executor, self._page, org_id, start, upto))

        submit(_IN_FLIGHT)
        try:
            while pending:
                page = await pending.popleft()
                submit(1)
                yield page
        finally:  # the reader stopped early (a broken chain): let the reads in flight end
            await asyncio.gather(*pending, return_exceptions=True)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        with self._lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()
