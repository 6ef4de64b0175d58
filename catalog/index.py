"""The lesson index in SQLite: one writer thread, readers in worker threads (WAL), FTS5 search
over Chinese and English terms (see `catalog.text`), filters, sorting, paging and facets.

The index is a cache of the bucket's manifests: `CatalogIndex.replace_all` rebuilds it."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, TypeVar

from catalog.errors import BadQuery, LessonNotFound
from catalog.models import STATUSES, Lesson
from catalog.text import index_terms, match_query

T = TypeVar("T")

MAX_LIMIT = 100
FACETS = ("subject", "grade", "school", "county")
FILTERS = ("subject", "grade", "school", "county", "teacher", "status", "room")
SORTS = {
    "newest": "l.started_at DESC",
    "oldest": "l.started_at ASC",
    "longest": "l.duration_s DESC, l.started_at DESC",
    "title": "l.title COLLATE NOCASE ASC, l.started_at DESC",
    "relevance": "rank, l.started_at DESC",
}

SCHEMA = """
CREATE TABLE IF NOT EXISTS lessons (
    rowid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    room TEXT NOT NULL, school TEXT NOT NULL, county TEXT NOT NULL, teacher TEXT NOT NULL,
    subject TEXT NOT NULL, grade TEXT NOT NULL, title TEXT NOT NULL, description TEXT NOT NULL,
    tags TEXT NOT NULL, started_at REAL NOT NULL, duration_s REAL NOT NULL, thumbnail TEXT,
    status TEXT NOT NULL, playlist TEXT NOT NULL, size_bytes INTEGER NOT NULL,
    segments INTEGER NOT NULL, codecs TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS lessons_started ON lessons (started_at);
CREATE INDEX IF NOT EXISTS lessons_subject ON lessons (subject, started_at);
CREATE INDEX IF NOT EXISTS lessons_grade ON lessons (grade, started_at);
CREATE INDEX IF NOT EXISTS lessons_school ON lessons (school, started_at);
CREATE INDEX IF NOT EXISTS lessons_county ON lessons (county, started_at);
CREATE INDEX IF NOT EXISTS lessons_teacher ON lessons (teacher, started_at);
CREATE INDEX IF NOT EXISTS lessons_room ON lessons (room, started_at);
CREATE INDEX IF NOT EXISTS lessons_status ON lessons (status, started_at);
CREATE VIRTUAL TABLE IF NOT EXISTS lessons_fts USING fts5(
    bigrams, unigrams, words, tokenize = 'unicode61 remove_diacritics 2'
);
"""

COLUMNS = ("id", "room", "school", "county", "teacher", "subject", "grade", "title",
           "description", "tags", "started_at", "duration_s", "thumbnail", "status",
           "playlist", "size_bytes", "segments", "codecs")


@dataclass(frozen=True)
class Query:
    """A search, validated: build it with `Query.from_params` from untrusted input."""

    text: str = ""
    filters: dict[str, str] = field(default_factory=dict)
    since: float | None = None
    until: float | None = None
    sort: str = "newest"
    limit: int = 20
    offset: int = 0

    @classmethod
    def from_params(cls, params: dict[str, str], tz: tzinfo = UTC) -> Query:
        """`from`/`to` are whole days in `tz` (the schools' time zone)."""
        known = {"q", "from", "to", "sort", "limit", "offset", *FILTERS}
        for name in params:
            if name not in known and name != "token":
                raise BadQuery(name, f"unknown parameter; use {', '.join(sorted(known))}")
        filters = {k: params[k].strip() for k in FILTERS if params.get(k, "").strip()}
        if "status" in filters and filters["status"] not in STATUSES:
            raise BadQuery("status", f"must be one of {', '.join(STATUSES)}")
        text = params.get("q", "").strip()
        if len(text) > 200:
            raise BadQuery("q", "at most 200 characters")
        has_terms = match_query(text) is not None
        sort = params.get("sort") or ("relevance" if has_terms else "newest")
        if sort not in SORTS:
            raise BadQuery("sort", f"must be one of {', '.join(SORTS)}")
        if sort == "relevance" and not has_terms:
            sort = "newest"
        return cls(text=text, filters=filters, since=_date(params, "from", tz, start=True),
                   until=_date(params, "to", tz, start=False), sort=sort,
                   limit=min(_int(params, "limit", 20, 1), MAX_LIMIT),
                   offset=_int(params, "offset", 0, 0))


def _int(params: dict[str, str], name: str, default: int, least: int) -> int:
    raw = params.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadQuery(name, f"must be a whole number, not {raw[:40]!r}") from None
    if value < least:
        raise BadQuery(name, f"must be at least {least}")
    return value


def _date(params: dict[str, str], name: str, tz: tzinfo, start: bool) -> float | None:
    raw = params.get(name, "").strip()
    if not raw:
        return None
    try:
        day = datetime.strptime(raw, "%Y-%m-%d").date()
    except ValueError:
        raise BadQuery(name, f"must be a date like 2026-09-01, not {raw[:40]!r}") from None
    if not start:
        day += timedelta(days=1)  # `to` includes its whole day
    return datetime.combine(day, datetime.min.time(), tzinfo=tz).timestamp()


@dataclass(frozen=True)
class Page:
    lessons: tuple[Lesson, ...]
    total: int
    facets: dict[str, dict[str, int]]
    query: Query


class CatalogIndex:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="catalog-writer")
        self._readers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="catalog-reader")
        self._local = threading.local()
        self._write_conn: sqlite3.Connection | None = None

    # --- connections ------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=10, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=10000")
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
        return conn

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def run() -> T:
            conn = self._writer_conn()
            with conn:
                return fn(conn)

        return await asyncio.get_running_loop().run_in_executor(self._writer, run)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            self._readers, lambda: fn(self._reader_conn()))

    async def open(self) -> None:
        await self._write(lambda conn: None)

    async def close(self) -> None:
        def close_writer() -> None:
            if self._write_conn is not None:
                self._write_conn.close()
                self._write_conn = None

        await asyncio.get_running_loop().run_in_executor(self._writer, close_writer)
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)

    # --- writing ----------------------------------------------------------------------------
    async def upsert(self, lesson: Lesson) -> None:
        await self._write(lambda conn: _upsert(conn, lesson))

    async def upsert_many(self, lessons: Iterable[Lesson]) -> None:
        items = list(lessons)

        def upsert_all(conn: sqlite3.Connection) -> None:
            for lesson in items:
                _upsert(conn, lesson)

        await self._write(upsert_all)

    async def replace_all(self, lessons: Iterable[Lesson]) -> int:
        """Make the index exactly these lessons (a rebuild from the bucket)."""
        items = list(lessons)

        def replace(conn: sqlite3.Connection) -> int:
            conn.execute("DELETE FROM lessons_fts")
            conn.execute("DELETE FROM lessons")
            for lesson in items:
                _upsert(conn, lesson)
            return len(items)

        return await self._write(replace)

    async def delete(self, lesson_id: str) -> None:
        def delete(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT rowid FROM lessons WHERE id = ?", (lesson_id,)).fetchone()
            if row is None:
                raise LessonNotFound(f"no lesson {lesson_id!r}")
            conn.execute("DELETE FROM lessons_fts WHERE rowid = ?", (row[0],))
            conn.execute("DELETE FROM lessons WHERE rowid = ?", (row[0],))

        await self._write(delete)

    async def set_status(self, lesson_id: str, status: str) -> None:
        await self._write(lambda conn: conn.execute(
            "UPDATE lessons SET status = ? WHERE id = ?", (status, lesson_id)))

    # --- reading ----------------------------------------------------------------------------
    async def get(self, lesson_id: str) -> Lesson:
        def get(conn: sqlite3.Connection) -> Lesson:
            row = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM lessons WHERE id = ?",
                               (lesson_id,)).fetchone()
            if row is None:
                raise LessonNotFound(f"no lesson {lesson_id!r}")
            return _lesson(row)

        return await self._read(get)

    async def all_ids(self) -> list[str]:
        return await self._read(lambda conn: [
            r[0] for r in conn.execute("SELECT id FROM lessons ORDER BY id")])

    async def search(self, query: Query, facets: bool = True) -> Page:
        return await self._read(lambda conn: _search(conn, query, facets))


def _upsert(conn: sqlite3.Connection, lesson: Lesson) -> None:
    values = (lesson.id, lesson.room, lesson.school, lesson.county, lesson.teacher,
              lesson.subject, lesson.grade, lesson.title, lesson.description,
              json.dumps(list(lesson.tags), ensure_ascii=False), lesson.started_at,
              lesson.duration_s, lesson.thumbnail, lesson.status, lesson.playlist,
              lesson.size_bytes, lesson.segments, json.dumps(lesson.codecs))
    row = conn.execute("SELECT rowid FROM lessons WHERE id = ?", (lesson.id,)).fetchone()
    if row is None:
        cursor = conn.execute(
            f"INSERT INTO lessons ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
            values)
        rowid = cursor.lastrowid
    else:
        rowid = row[0]
        conn.execute(f"UPDATE lessons SET {', '.join(f'{c} = ?' for c in COLUMNS)} "
                     "WHERE rowid = ?", (*values, rowid))
        conn.execute("DELETE FROM lessons_fts WHERE rowid = ?", (rowid,))
    terms = index_terms(" ".join((lesson.title, lesson.description, " ".join(lesson.tags),
                                  lesson.subject, lesson.school, lesson.county,
                                  lesson.teacher, lesson.grade)))
    conn.execute("INSERT INTO lessons_fts (rowid, bigrams, unigrams, words) VALUES (?, ?, ?, ?)",
                 (rowid, terms.bigrams, terms.unigrams, terms.words))


def _lesson(row: sqlite3.Row) -> Lesson:
    data: dict[str, Any] = dict(zip(COLUMNS, row, strict=True))
    data["tags"] = tuple(json.loads(data["tags"]))
    data["codecs"] = json.loads(data["codecs"])
    return Lesson(**data)


def _search(conn: sqlite3.Connection, query: Query, with_facets: bool) -> Page:
    # (the filter column a condition belongs to, or "", the SQL, its argument)
    conditions: list[tuple[str, str, object]] = []
    match = match_query(query.text)
    source = "lessons l"
    if match:
        # CROSS JOIN fixes the order: the text match runs once, then rows are looked up by
        # rowid (measured: the planner otherwise probed the FTS table once per filtered row)
        source = "lessons_fts f CROSS JOIN lessons l ON l.rowid = f.rowid"
        conditions.append(("", "lessons_fts MATCH ?", match))
    for name, value in query.filters.items():
        conditions.append((name, f"l.{name} = ?", value))
    if query.since is not None:
        conditions.append(("", "l.started_at >= ?", query.since))
    if query.until is not None:
        conditions.append(("", "l.started_at < ?", query.until))

    def where(skip: str = "") -> tuple[str, list[object]]:
        kept = [(sql, arg) for column, sql, arg in conditions if not skip or column != skip]
        clause = ("WHERE " + " AND ".join(sql for sql, _ in kept)) if kept else ""
        return clause, [arg for _, arg in kept]

    clause, args = where()
    rows = conn.execute(
        f"SELECT {', '.join('l.' + c for c in COLUMNS)} FROM {source} {clause} "
        f"ORDER BY {SORTS[query.sort]} LIMIT ? OFFSET ?",
        (*args, query.limit, query.offset)).fetchall()
    total = conn.execute(f"SELECT count(*) FROM {source} {clause}", args).fetchone()[0]
    facets: dict[str, dict[str, int]] = {}
    if with_facets:
        for name in FACETS:
            # Each facet counts with every filter but its own, so the other choices of a
            # chosen facet stay visible (and countable) on the browse page.
            facet_clause, facet_args = where(skip=name)
            facets[name] = {
                value: count for value, count in conn.execute(
                    f"SELECT l.{name}, count(*) FROM {source} {facet_clause} GROUP BY l.{name} "
                    f"ORDER BY count(*) DESC, l.{name} LIMIT 50", facet_args)
                if value}
    return Page(tuple(_lesson(r) for r in rows), total, facets, query)
