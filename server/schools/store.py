"""The schools database file: SQLite in WAL mode, one writer thread, readers in worker threads,
so no query ever runs on the event loop. Registry, timetable and attendance share it."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS counties (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS schools (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL,
    county_id INTEGER NOT NULL REFERENCES counties(id),
    kind TEXT NOT NULL CHECK (kind IN ('showcase', 'receiving')),
    UNIQUE (county_id, name)
);
CREATE TABLE IF NOT EXISTS classrooms (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL,
    school_id INTEGER NOT NULL REFERENCES schools(id),
    UNIQUE (school_id, name)
);
CREATE TABLE IF NOT EXISTS teachers (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL,
    school_id INTEGER NOT NULL REFERENCES schools(id), subject TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS rooms (
    name TEXT PRIMARY KEY, classroom_id INTEGER NOT NULL REFERENCES classrooms(id),
    title TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS pairings (
    room TEXT NOT NULL REFERENCES rooms(name) ON DELETE CASCADE,
    classroom_id INTEGER NOT NULL REFERENCES classrooms(id),
    PRIMARY KEY (room, classroom_id)
);
CREATE TABLE IF NOT EXISTS scheduled_lessons (
    id INTEGER PRIMARY KEY, room TEXT NOT NULL REFERENCES rooms(name),
    teacher_id INTEGER REFERENCES teachers(id), subject TEXT NOT NULL, grade TEXT NOT NULL,
    title TEXT NOT NULL, starts_at REAL NOT NULL, ends_at REAL NOT NULL, weeks INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS scheduled_room ON scheduled_lessons (room, starts_at);
CREATE TABLE IF NOT EXISTS lesson_targets (
    lesson_id INTEGER NOT NULL REFERENCES scheduled_lessons(id) ON DELETE CASCADE,
    classroom_id INTEGER NOT NULL REFERENCES classrooms(id),
    PRIMARY KEY (lesson_id, classroom_id)
);
CREATE TABLE IF NOT EXISTS lesson_runs (
    id TEXT PRIMARY KEY, lesson_id INTEGER NOT NULL, room TEXT NOT NULL,
    starts_at REAL NOT NULL, ends_at REAL NOT NULL, live_at REAL, ended_at REAL,
    recording_id TEXT, coverage REAL
);
CREATE INDEX IF NOT EXISTS runs_recording ON lesson_runs (recording_id);
CREATE TABLE IF NOT EXISTS attendance (
    run_id TEXT NOT NULL REFERENCES lesson_runs(id) ON DELETE CASCADE,
    classroom_id INTEGER NOT NULL, target INTEGER NOT NULL, joined_at REAL, left_at REAL,
    watched_s REAL NOT NULL, joins INTEGER NOT NULL, join_latency_s REAL, rtt_ms REAL,
    loss REAL, freeze_s REAL NOT NULL, samples INTEGER NOT NULL,
    PRIMARY KEY (run_id, classroom_id)
);
"""


class Database:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="schools-writer")
        self._readers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="schools-reader")
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
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def _writer_conn(self) -> sqlite3.Connection:
        if self._write_conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._write_conn = self._connect()
            self._write_conn.executescript(SCHEMA)
        return self._write_conn

    def _reader_conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._lock:
                self._reader_conns.append(conn)
        return conn

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in one transaction on the writer thread (rolled back if it raises)."""
        def run() -> T:
            conn = self._writer_conn()
            with conn:
                return fn(conn)

        return await asyncio.get_running_loop().run_in_executor(self._writer, run)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            self._readers, lambda: fn(self._reader_conn()))

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
