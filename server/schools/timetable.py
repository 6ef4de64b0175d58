"""The timetable: scheduled lessons (room, teacher, subject, grade, title, start, end, target
classrooms, weekly repetition). One room never has two lessons at once. Kept in memory as a
snapshot too, so the relay's events can be matched to a lesson without a query."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime, tzinfo

from catalog.database import Database
from server.errors import BadRequest, Conflict, NotFound, Unprocessable
from server.schools.models import ScheduledLesson

MAX_WEEKS = 60
MAX_DURATION_S = 12 * 3600


@dataclass(frozen=True)
class LessonDraft:
    """A lesson to schedule, as validated from a request; `targets` None: the room's pairings."""

    room: str
    teacher: int | None
    subject: str
    grade: str
    title: str
    starts_at: float
    ends_at: float
    weeks: int
    targets: tuple[int, ...] | None


@dataclass(frozen=True)
class Occurrence:
    lesson: ScheduledLesson
    starts_at: float
    ends_at: float
    run_id: str


class Timetable:
    def __init__(self, db: Database, tz: tzinfo) -> None:
        self.db = db
        self.tz = tz
        self.lessons: tuple[ScheduledLesson, ...] = ()

    async def open(self) -> None:
        self.lessons = await self.db.read(_load)

    async def create(self, draft: LessonDraft) -> ScheduledLesson:
        if draft.ends_at <= draft.starts_at:
            raise BadRequest("the lesson ends before it starts; \"end\" must be after \"start\"")
        if draft.ends_at - draft.starts_at > MAX_DURATION_S:
            raise BadRequest(f"a lesson lasts at most {MAX_DURATION_S // 3600} hours")
        if not 1 <= draft.weeks <= MAX_WEEKS:
            raise BadRequest(f'"weeks" must be 1 (once) to {MAX_WEEKS}')

        def insert(conn: sqlite3.Connection) -> tuple[ScheduledLesson, tuple[ScheduledLesson,
                                                                             ...]]:
            if conn.execute("SELECT 1 FROM rooms WHERE name = ?", (draft.room,)).fetchone() is None:
                raise Unprocessable(f"no room {draft.room!r} in the registry")
            if draft.teacher is not None and conn.execute(
                    "SELECT 1 FROM teachers WHERE id = ?", (draft.teacher,)).fetchone() is None:
                raise Unprocessable(f"no teacher {draft.teacher}")
            paired = {r[0] for r in conn.execute(
                "SELECT classroom_id FROM pairings WHERE room = ?", (draft.room,))}
            targets = tuple(sorted(set(draft.targets))) if draft.targets is not None else \
                tuple(sorted(paired))
            for classroom in targets:
                if classroom not in paired:
                    raise Unprocessable(f"classroom {classroom} is not paired with room "
                                        f"{draft.room!r}; pair it first")
            candidate = ScheduledLesson(0, draft.room, draft.teacher, draft.subject, draft.grade,
                                        draft.title, draft.starts_at, draft.ends_at, draft.weeks,
                                        targets)
            for other in _load(conn):
                if other.room != draft.room:
                    continue
                clash = other.overlaps(candidate)
                if clash is not None:
                    raise Conflict(
                        f"room {draft.room!r} already has lesson {other.id} ({other.title!r}) "
                        f"at {self.format(clash[0])}; a room holds one lesson at a time")
            cur = conn.execute(
                "INSERT INTO scheduled_lessons (room, teacher_id, subject, grade, title, "
                "starts_at, ends_at, weeks) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (draft.room, draft.teacher, draft.subject, draft.grade, draft.title,
                 draft.starts_at, draft.ends_at, draft.weeks))
            lesson_id = int(cur.lastrowid or 0)
            conn.executemany("INSERT INTO lesson_targets (lesson_id, classroom_id) VALUES (?, ?)",
                             [(lesson_id, c) for c in targets])
            lessons = _load(conn)
            return next(lesson for lesson in lessons if lesson.id == lesson_id), lessons

        lesson, self.lessons = await self.db.write(insert)
        return lesson

    async def delete(self, lesson_id: int) -> None:
        def delete(conn: sqlite3.Connection) -> tuple[ScheduledLesson, ...]:
            cur = conn.execute("DELETE FROM scheduled_lessons WHERE id = ?", (lesson_id,))
            if cur.rowcount == 0:
                raise NotFound(f"no scheduled lesson {lesson_id}")
            return _load(conn)

        self.lessons = await self.db.write(delete)

    def get(self, lesson_id: int) -> ScheduledLesson:
        for lesson in self.lessons:
            if lesson.id == lesson_id:
                return lesson
        raise NotFound(f"no scheduled lesson {lesson_id}")

    def find(self, room: str | None = None, since: float | None = None,
             until: float | None = None) -> list[ScheduledLesson]:
        """Lessons (of a room) with an occurrence in [since, until)."""
        out = []
        for lesson in self.lessons:
            if room is not None and lesson.room != room:
                continue
            if any((since is None or end > since) and (until is None or start < until)
                   for start, end in lesson.occurrences()):
                out.append(lesson)
        return out

    def current(self, room: str, now: float, early_s: float) -> Occurrence | None:
        """The occurrence a room going live at `now` belongs to."""
        for lesson in self.lessons:
            if lesson.room == room:
                slot = lesson.occurrence_at(now, early_s)
                if slot is not None:
                    return Occurrence(lesson, slot[0], slot[1], self.run_id(lesson, slot[0]))
        return None

    def occurrences_between(self, since: float, until: float) -> list[Occurrence]:
        return [Occurrence(lesson, start, end, self.run_id(lesson, start))
                for lesson in self.lessons for start, end in lesson.occurrences()
                if start < until and end > since]

    def run_id(self, lesson: ScheduledLesson, starts_at: float) -> str:
        """`<lesson id>-<yyyymmdd>` of the occurrence, in the schools' time zone."""
        return f"{lesson.id}-{datetime.fromtimestamp(starts_at, self.tz):%Y%m%d}"

    def format(self, t: float) -> str:
        return datetime.fromtimestamp(t, self.tz).isoformat(timespec="minutes")


def _load(conn: sqlite3.Connection) -> tuple[ScheduledLesson, ...]:
    targets: dict[int, list[int]] = {}
    for row in conn.execute("SELECT lesson_id, classroom_id FROM lesson_targets "
                            "ORDER BY classroom_id"):
        targets.setdefault(row[0], []).append(row[1])
    return tuple(
        ScheduledLesson(r["id"], r["room"], r["teacher_id"], r["subject"], r["grade"], r["title"],
                        r["starts_at"], r["ends_at"], r["weeks"], tuple(targets.get(r["id"], [])))
        for r in conn.execute("SELECT * FROM scheduled_lessons ORDER BY starts_at, id"))


def parse_time(value: object, tz: tzinfo, name: str) -> float:
    """ISO 8601 (a time without an offset is in the schools' zone) or unix seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            pass
        else:
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=tz)
            return parsed.timestamp()
    raise BadRequest(f'"{name}" must be a time like 2026-09-01T08:00 (the schools\' zone) or '
                     '2026-09-01T08:00+08:00')


def targets_of(value: object) -> tuple[int, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool)
                                              for v in value):
        raise BadRequest('"targets" must be a list of classroom ids')
    return tuple(value)
