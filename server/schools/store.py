"""The schools database file (registry, timetable and attendance share it): its schema, on
`catalog.database.Database` (SQLite WAL, one writer thread, reader threads, so no query runs
on the event loop)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from catalog.database import Database

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


def _create(conn: sqlite3.Connection) -> None:
    conn.executescript(SCHEMA)


def schools_database(path: Path) -> Database:
    """The schools file, on the catalog's SQLite conventions (`catalog.database`)."""
    return Database(path, name="schools", setup=_create, readers=2, foreign_keys=True)
