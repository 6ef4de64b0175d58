"""The lesson index in SQLite: one writer thread, readers in worker threads (WAL), FTS5 search
over Chinese and English terms (see `catalog.text`), filters, sorting, paging and facets.

The index is a cache of the bucket's manifests: `CatalogIndex.replace_all` rebuilds it."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, TypeVar

from catalog.columns import CODED, Criteria, Ints, Snapshot, rowids
from catalog.database import Database, read_transaction
from catalog.errors import BadQuery, LessonNotFound
from catalog.models import STATUSES, Lesson
from catalog.text import FTS_COLUMNS, fts_values, match_query

T = TypeVar("T")

MAX_LIMIT = 100
FACETS = ("subject", "grade", "school", "county")
FILTERS = CODED
# relevance: lessons whose title holds every term first, newest first within each group
SORTS = ("newest", "oldest", "longest", "title", "relevance")

SCHEMA_VERSION = 2  # PRAGMA user_version; an older index is migrated on open
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS lessons (
    rowid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    room TEXT NOT NULL, school TEXT NOT NULL, county TEXT NOT NULL, teacher TEXT NOT NULL,
    subject TEXT NOT NULL, grade TEXT NOT NULL, title TEXT NOT NULL, description TEXT NOT NULL,
    tags TEXT NOT NULL, started_at REAL NOT NULL, duration_s REAL NOT NULL, thumbnail TEXT,
    status TEXT NOT NULL, playlist TEXT NOT NULL, size_bytes INTEGER NOT NULL,
    segments INTEGER NOT NULL, codecs TEXT NOT NULL
);
-- one per filterable column (loading a column snapshot reads it in order) and sort order
CREATE INDEX IF NOT EXISTS lessons_started ON lessons (started_at);
CREATE INDEX IF NOT EXISTS lessons_subject ON lessons (subject, started_at);
CREATE INDEX IF NOT EXISTS lessons_grade ON lessons (grade, started_at);
CREATE INDEX IF NOT EXISTS lessons_school ON lessons (school, started_at);
CREATE INDEX IF NOT EXISTS lessons_county ON lessons (county, started_at);
CREATE INDEX IF NOT EXISTS lessons_teacher ON lessons (teacher, started_at);
CREATE INDEX IF NOT EXISTS lessons_room ON lessons (room, started_at);
CREATE INDEX IF NOT EXISTS lessons_status ON lessons (status, started_at);
CREATE INDEX IF NOT EXISTS lessons_title ON lessons (title COLLATE NOCASE, started_at DESC);
CREATE INDEX IF NOT EXISTS lessons_longest ON lessons (duration_s DESC, started_at DESC);
-- contentless: the terms are derived from the lessons row, so they are not stored twice
CREATE VIRTUAL TABLE IF NOT EXISTS lessons_fts USING fts5(
    {", ".join(FTS_COLUMNS)}, content = '', tokenize = 'unicode61 remove_diacritics 2'
);
-- bumped by every write, so readers (in any process) know when their snapshot is stale
CREATE TABLE IF NOT EXISTS meta (version INTEGER NOT NULL);
INSERT INTO meta (version) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM meta);
"""
TextRow = Mapping[str, Any] | sqlite3.Row  # rowid and TEXT_COLUMNS
TEXT_COLUMNS = ("title", "description", "tags", "subject", "school", "county", "teacher",
                "grade")

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
        self._db = Database(path, name="catalog", setup=_migrate)
        self._snapshot: Snapshot | None = None
        self._snapshot_lock = threading.Lock()

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def change(conn: sqlite3.Connection) -> T:
            result = fn(conn)
            conn.execute("UPDATE meta SET version = version + 1")
            return result

        # The writer loads the new snapshot itself, so the next search does not wait for it.
        return await self._db.write(
            change, after=lambda conn: read_transaction(conn, self._current))

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._db.read(fn)

    def _current(self, conn: sqlite3.Connection) -> Snapshot:
        """The column snapshot of the version this read transaction sees."""
        version = int(conn.execute("SELECT version FROM meta").fetchone()[0])
        snapshot = self._snapshot
        if snapshot is not None and snapshot.version == version:
            return snapshot
        with self._snapshot_lock:
            snapshot = self._snapshot
            if snapshot is None or snapshot.version != version:
                snapshot = Snapshot.load(conn, version)
                if self._snapshot is None or self._snapshot.version < version:
                    self._snapshot = snapshot
            return snapshot

    async def open(self) -> None:
        await self._write(lambda conn: None)

    async def close(self) -> None:
        await self._db.close()
        self._snapshot = None

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
            conn.execute("INSERT INTO lessons_fts (lessons_fts) VALUES ('delete-all')")
            conn.execute("DELETE FROM lessons")
            for lesson in items:
                _upsert(conn, lesson, new=True)
            # merge the FTS index into one segment (a rebuild leaves a dozen)
            conn.execute("INSERT INTO lessons_fts (lessons_fts) VALUES ('optimize')")
            return len(items)

        count = await self._write(replace)
        # give the rebuild's WAL (as large as the database) back to the disk
        await self._db.write(lambda conn: None,
                             after=lambda conn: conn.execute("PRAGMA wal_checkpoint(TRUNCATE)"))
        return count

    async def delete(self, lesson_id: str) -> None:
        def delete(conn: sqlite3.Connection) -> None:
            row = _text_row(conn, lesson_id)
            if row is None:
                raise LessonNotFound(f"no lesson {lesson_id!r}")
            _delete_terms(conn, row)
            conn.execute("DELETE FROM lessons WHERE rowid = ?", (row["rowid"],))

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
        return await self._read(lambda conn: self._search(conn, query, facets))

    def _search(self, conn: sqlite3.Connection, query: Query, with_facets: bool) -> Page:
        snapshot = self._current(conn)
        match = match_query(query.text)
        title = match_query(query.text, title_only=True) if query.sort == "relevance" else None
        criteria = Criteria(
            filters=query.filters,
            text=_matching(conn, match) if match else None,
            title=_matching(conn, title) if title else None,
            # `newest` ranks lessons by start, latest first: a date range is a range of ranks
            before_rank=_started_since(conn, query.since) if query.since is not None else None,
            after_rank=_started_since(conn, query.until) if query.until is not None else None,
            sort=query.sort, limit=query.limit, offset=query.offset)
        found = snapshot.select(conn, criteria, FACETS if with_facets else ())
        rows = {row["rowid"]: row for row in conn.execute(
            f"SELECT rowid, {', '.join(COLUMNS)} FROM lessons "
            f"WHERE rowid IN ({', '.join('?' * len(found.rowids))})", found.rowids)}
        lessons = tuple(_lesson(rows[r]) for r in found.rowids)
        return Page(lessons, found.total, found.facets, query)


def _migrate(conn: sqlite3.Connection) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version == SCHEMA_VERSION:
        return
    if version > SCHEMA_VERSION:
        raise RuntimeError(f"{version=} of the catalog index is newer than this ClassCast "
                           f"({SCHEMA_VERSION}); rebuild it with `classcast catalog reindex`")
    # Version 1 stored every term in one set of columns, with their content: rebuild.
    conn.executescript("BEGIN; DROP TABLE IF EXISTS lessons_fts;" + SCHEMA)
    for row in conn.execute(f"SELECT rowid, {', '.join(TEXT_COLUMNS)} FROM lessons"):
        _insert_terms(conn, row)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _fts_row(row: TextRow) -> tuple[str, ...]:
    tags = row["tags"]
    tag_text = " ".join(json.loads(tags) if isinstance(tags, str) else tags)
    rest = " ".join((row["description"], tag_text, row["subject"], row["school"],
                     row["county"], row["teacher"], row["grade"]))
    return fts_values(row["title"], rest)


def _insert_terms(conn: sqlite3.Connection, row: TextRow) -> None:
    conn.execute(f"INSERT INTO lessons_fts (rowid, {', '.join(FTS_COLUMNS)}) "
                 f"VALUES (?, {', '.join('?' * len(FTS_COLUMNS))})",
                 (row["rowid"], *_fts_row(row)))


def _delete_terms(conn: sqlite3.Connection, row: TextRow) -> None:
    """Remove a row's terms from the contentless FTS table: its 'delete' command needs the
    values that were indexed, which are derived again from the lessons row."""
    conn.execute(f"INSERT INTO lessons_fts (lessons_fts, rowid, {', '.join(FTS_COLUMNS)}) "
                 f"VALUES ('delete', ?, {', '.join('?' * len(FTS_COLUMNS))})",
                 (row["rowid"], *_fts_row(row)))


def _text_row(conn: sqlite3.Connection, lesson_id: str) -> sqlite3.Row | None:
    row: sqlite3.Row | None = conn.execute(
        f"SELECT rowid, {', '.join(TEXT_COLUMNS)} FROM lessons WHERE id = ?",
        (lesson_id,)).fetchone()
    return row


def _upsert(conn: sqlite3.Connection, lesson: Lesson, new: bool = False) -> None:
    values = (lesson.id, lesson.room, lesson.school, lesson.county, lesson.teacher,
              lesson.subject, lesson.grade, lesson.title, lesson.description,
              json.dumps(list(lesson.tags), ensure_ascii=False), lesson.started_at,
              lesson.duration_s, lesson.thumbnail, lesson.status, lesson.playlist,
              lesson.size_bytes, lesson.segments, json.dumps(lesson.codecs))
    old = None if new else _text_row(conn, lesson.id)
    if old is None:
        cursor = conn.execute(
            f"INSERT INTO lessons ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
            values)
        rowid = cursor.lastrowid
    else:
        rowid = old["rowid"]
        _delete_terms(conn, old)
        conn.execute(f"UPDATE lessons SET {', '.join(f'{c} = ?' for c in COLUMNS)} "
                     "WHERE rowid = ?", (*values, rowid))
    _insert_terms(conn, {"rowid": rowid, "title": lesson.title,
                         "description": lesson.description, "tags": lesson.tags,
                         "subject": lesson.subject, "school": lesson.school,
                         "county": lesson.county, "teacher": lesson.teacher,
                         "grade": lesson.grade})


def _matching(conn: sqlite3.Connection, match: str) -> Ints:
    return rowids(conn.execute("SELECT group_concat(rowid, ' ') FROM lessons_fts "
                               "WHERE lessons_fts MATCH ?", (match,)).fetchone()[0])


def _started_since(conn: sqlite3.Connection, moment: float) -> int:
    """How many lessons started at or after `moment`: the newest-rank where they end."""
    return int(conn.execute("SELECT count(*) FROM lessons WHERE started_at >= ?",
                            (moment,)).fetchone()[0])


def _lesson(row: sqlite3.Row) -> Lesson:
    data: dict[str, Any] = {name: row[name] for name in COLUMNS}
    data["tags"] = tuple(json.loads(data["tags"]))
    data["codecs"] = json.loads(data["codecs"])
    return Lesson(**data)
