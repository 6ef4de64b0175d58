"""An SQLite file the service owns: WAL mode, one writer thread, reader threads.

No query runs on the event loop: writes go, one transaction each, to a single writer thread
(SQLite allows one writer anyway), reads to a small pool of threads with a connection each,
each read in one transaction so every statement in it sees the same version of the file.
The catalog index and the schools database both use it."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class Database:
    def __init__(self, path: Path, *, name: str, setup: Callable[[sqlite3.Connection], None],
                 readers: int = 4, foreign_keys: bool = False) -> None:
        """`setup` runs once in a transaction on the writer's connection (schema, migration)."""
        self.path = path
        self._setup = setup
        self._foreign_keys = foreign_keys
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{name}-writer")
        self._readers = ThreadPoolExecutor(max_workers=readers,
                                           thread_name_prefix=f"{name}-reader")
        self._local = threading.local()
        self._write_conn: sqlite3.Connection | None = None
        self._reader_conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=10, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=10000")
        # the WAL would otherwise stay as large as the biggest write transaction
        conn.execute("PRAGMA journal_size_limit=67108864")
        if self._foreign_keys:
            conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def _writer_conn(self) -> sqlite3.Connection:
        if self._write_conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._connect()
            with conn:
                self._setup(conn)
            self._write_conn = conn
        return self._write_conn

    def _reader_conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._lock:
                self._reader_conns.append(conn)
        return conn

    async def write(self, fn: Callable[[sqlite3.Connection], T],
                    after: Callable[[sqlite3.Connection], object] | None = None) -> T:
        """Run `fn` in one transaction on the writer thread (rolled back if it raises), then
        `after` on the same thread, outside the transaction (e.g. to refresh a cache)."""
        def run() -> T:
            conn = self._writer_conn()
            with conn:
                result = fn(conn)
            if after is not None:
                after(conn)
            return result

        return await asyncio.get_running_loop().run_in_executor(self._writer, run)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in one read transaction on a reader thread."""
        return await asyncio.get_running_loop().run_in_executor(
            self._readers, lambda: read_transaction(self._reader_conn(), fn))

    async def open(self) -> None:
        await self.write(lambda conn: None)

    async def close(self) -> None:
        def close_writer() -> None:
            if self._write_conn is not None:
                self._write_conn.close()
                self._write_conn = None

        await asyncio.get_running_loop().run_in_executor(self._writer, close_writer)
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        with self._lock:
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()


def read_transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run `fn` in one read transaction: every statement sees the same version."""
    conn.execute("BEGIN")
    try:
        return fn(conn)
    finally:
        conn.rollback()
