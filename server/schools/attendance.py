"""Attendance: which classrooms received each scheduled lesson, for how long, how often they
reconnected and how good their link was; coverage when the lesson ends.

`AttendanceService` listens to the relay (room live / not live, subscriber joined / left) and
matches events to the timetable in memory. A classroom device is recognised by its token's
subject, `classroom:<id>` (see `server.tokens.classroom_subject`). Watch time accrues only while
the teacher is live; quality comes from the classroom's receiver reports, sampled through
`server.quality.sample_link`. State is written to SQLite on every sample tick and when a lesson
ends; the ticker is the one task this service owns."""

from __future__ import annotations

import asyncio
import datetime
import logging
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field

from catalog.database import Database
from recorder.manifest import LessonInfo
from server.errors import NotFound
from server.quality import LinkQuality, sample_link
from server.schools.metrics import LiveState, SchoolMetrics
from server.schools.models import Attendance, LessonRun
from server.schools.registry import Registry
from server.schools.timetable import Occurrence, Timetable
from server.sessions import PeerSession
from server.settings import SchoolsSettings
from server.tokens import classroom_of

logger = logging.getLogger(__name__)

# A sample interval counts as frozen picture when the classroom's latest receiver report shows
# this much loss, when (almost) nothing was sent to it, or when its receiver reports stopped
# coming (browsers and aiortc send one about every second while they receive).
FREEZE_LOSS = 0.10
STALL_KBPS = 8.0
SILENT_REPORTS_S = 3.0


@dataclass
class _Viewer:
    target: bool
    joined_at: float | None = None
    left_at: float | None = None
    watched_s: float = 0.0
    joins: int = 0
    join_latency_s: float | None = None
    rtt_sum: float = 0.0
    rtt_n: int = 0
    loss_sum: float = 0.0
    loss_n: int = 0
    freeze_s: float = 0.0
    samples: int = 0
    seats: set[str] = field(default_factory=set)

    def frozen(self, classroom: int) -> Attendance:
        return Attendance(
            classroom=classroom, target=self.target, joined_at=self.joined_at,
            left_at=self.left_at, watched_s=round(self.watched_s, 3), joins=self.joins,
            join_latency_s=self.join_latency_s,
            rtt_ms=round(self.rtt_sum / self.rtt_n, 1) if self.rtt_n else None,
            loss=round(self.loss_sum / self.loss_n, 4) if self.loss_n else None,
            freeze_s=round(self.freeze_s, 3), samples=self.samples)


@dataclass
class _Run:
    occurrence: Occurrence
    viewers: dict[int, _Viewer]
    accrued_at: float  # monotonic
    live: bool = False
    live_at: float | None = None
    not_live_since: float | None = None  # monotonic
    ended_at: float | None = None
    recording: str | None = None
    coverage: float | None = None

    @property
    def id(self) -> str:
        return self.occurrence.run_id


@dataclass
class _Seat:
    """A registered classroom's session that is receiving."""

    session: PeerSession
    classroom: int
    run: str | None = None
    quality: LinkQuality | None = None


class AttendanceService:
    """Implements `server.relay.RoomListener`, `server.relay.SubscriberListener` and
    `server.recording.LessonSource`."""

    def __init__(self, db: Database, registry: Registry, timetable: Timetable,
                 metrics: SchoolMetrics, settings: SchoolsSettings) -> None:
        self.db = db
        self.registry = registry
        self.timetable = timetable
        self.metrics = metrics
        self.settings = settings
        self._runs: dict[str, _Run] = {}  # running, by run id
        self._ended: dict[str, _Run] = {}  # ended, while their time slot lasts
        self._room_runs: dict[str, str] = {}
        self._live_rooms: set[str] = set()
        self._seats: dict[str, _Seat] = {}
        self._ticker: asyncio.Task[None] | None = None
        metrics.bind(self.live_state)

    async def open(self) -> None:
        """Take back the lessons a restart interrupted, then start the ticker."""
        for stored in await self.db.read(_unfinished):
            self._resume(stored)
        self._ticker = asyncio.create_task(self._tick_forever(), name="attendance-ticker")

    def _resume(self, stored: LessonRun) -> None:
        """A run the service was stopped in: it goes on if the teacher is back within
        `end_grace_s` of this start, and ends with what was counted otherwise."""
        lesson = next((x for x in self.timetable.lessons if x.id == stored.lesson), None)
        if lesson is None or stored.room in self._room_runs:
            return
        viewers = {}
        for a in stored.attendance:
            # the means weigh as many samples as they were taken from
            rtt_n = a.samples if a.rtt_ms is not None else 0
            loss_n = a.samples if a.loss is not None else 0
            left_at = a.left_at
            if left_at is None and a.joined_at is not None:
                left_at = time.time()  # its session ended with the stop
            viewers[a.classroom] = _Viewer(
                target=a.target, joined_at=a.joined_at, left_at=left_at,
                watched_s=a.watched_s, joins=a.joins, join_latency_s=a.join_latency_s,
                rtt_sum=(a.rtt_ms or 0.0) * rtt_n, rtt_n=rtt_n,
                loss_sum=(a.loss or 0.0) * loss_n, loss_n=loss_n,
                freeze_s=a.freeze_s, samples=a.samples)
        occurrence = Occurrence(lesson, stored.starts_at, stored.ends_at, stored.id)
        run = _Run(occurrence, viewers, accrued_at=time.monotonic(), live_at=stored.live_at,
                   not_live_since=time.monotonic(), recording=stored.recording)
        self._runs[run.id] = run
        self._room_runs[stored.room] = run.id
        logger.info("scheduled lesson %s in room %s was running at the last stop; resuming it",
                    run.id, stored.room)

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
            self._ticker = None
        for run in self._runs.values():
            self._accrue(run)
        await self._persist([*self._runs.values()])

    # --- relay events -----------------------------------------------------------------------
    def room_live(self, room: str) -> None:
        self._live_rooms.add(room)
        run = self._run_of_room(room) or self._open_run(room)
        if run is None:
            return
        self._accrue(run)
        run.live, run.not_live_since = True, None
        if run.live_at is None:
            run.live_at = time.time()
            logger.info("room %s: scheduled lesson %s (%s) is live", room, run.id,
                        run.occurrence.lesson.title)

    def room_not_live(self, room: str) -> None:
        self._live_rooms.discard(room)
        run = self._run_of_room(room)
        if run is not None:
            self._accrue(run)
            run.live, run.not_live_since = False, time.monotonic()

    def subscriber_joined(self, session: PeerSession) -> None:
        classroom = classroom_of(session.subject)
        place = self.registry.directory.places.get(classroom) if classroom is not None else None
        if classroom is None or place is None:
            return  # not a registered classroom device (a viewer, the recorder, …)
        latency = time.monotonic() - session.created_at
        self.metrics.join_latency.labels(place.county_name).observe(latency)
        seat = _Seat(session, classroom)
        self._seats[session.id] = seat
        run = self._run_of_room(session.room)
        if run is not None:
            self._sit(run, seat, latency)

    def subscriber_left(self, session: PeerSession) -> None:
        seat = self._seats.pop(session.id, None)
        if seat is None or seat.run is None:
            return
        run = self._runs.get(seat.run) or self._ended.get(seat.run)
        if run is None:
            return
        self._accrue(run)
        viewer = run.viewers[seat.classroom]
        viewer.seats.discard(session.id)
        if not viewer.seats:
            viewer.left_at = time.time()

    # --- the recorder's lesson source -------------------------------------------------------
    def lesson_for(self, room: str) -> LessonInfo | None:
        run = self._run_of_room(room)
        occurrence = run.occurrence if run is not None else self.timetable.current(
            room, time.time(), self.settings.early_start_s)
        if occurrence is None:
            return None
        lesson = occurrence.lesson
        directory = self.registry.directory
        teacher = directory.teachers.get(lesson.teacher) if lesson.teacher is not None else None
        registered = directory.rooms.get(room)
        place = directory.places.get(registered.classroom) if registered is not None else None
        return LessonInfo(school=place.school_name if place else "",
                          teacher=teacher.name if teacher else "", subject=lesson.subject,
                          grade=lesson.grade, title=lesson.title,
                          county=place.county_name if place else "")

    def recording_started(self, room: str, recording_id: str) -> None:
        run = self._run_of_room(room)
        if run is not None:
            run.recording = recording_id

    # --- state ------------------------------------------------------------------------------
    def _run_of_room(self, room: str) -> _Run | None:
        run_id = self._room_runs.get(room)
        return self._runs.get(run_id) if run_id is not None else None

    def _open_run(self, room: str) -> _Run | None:
        occurrence = self.timetable.current(room, time.time(), self.settings.early_start_s)
        if occurrence is None:
            return None
        run = self._ended.pop(occurrence.run_id, None)
        if run is not None:  # the teacher came back inside the lesson's time slot
            run.ended_at, run.coverage = None, None
            run.accrued_at = time.monotonic()
        else:
            run = _Run(occurrence, {c: _Viewer(target=True) for c in occurrence.lesson.targets},
                       accrued_at=time.monotonic())
        self._runs[run.id] = run
        self._room_runs[room] = run.id
        for seat in self._seats.values():  # classrooms connected before the run (re)opened
            if seat.session.room == room and seat.run is None:
                self._sit(run, seat, None, adopted=True)
        return run

    def _sit(self, run: _Run, seat: _Seat, latency: float | None, adopted: bool = False) -> None:
        self._accrue(run)
        viewer = run.viewers.setdefault(seat.classroom, _Viewer(target=False))
        if viewer.joined_at is None:
            viewer.joined_at = time.time()
            viewer.join_latency_s = None if latency is None else round(latency, 3)
        if not adopted or viewer.joins == 0:  # a seat kept across a reopening is no rejoin
            viewer.joins += 1
        viewer.left_at = None
        viewer.seats.add(seat.session.id)
        seat.run = run.id

    def _accrue(self, run: _Run) -> None:
        """Add the time since the last accrual to every classroom watching a live teacher."""
        now = time.monotonic()
        elapsed, run.accrued_at = now - run.accrued_at, now
        if not run.live or elapsed <= 0:
            return
        places = self.registry.directory.places
        for classroom, viewer in run.viewers.items():
            if viewer.seats:
                viewer.watched_s += elapsed
                place = places.get(classroom)
                self.metrics.minutes.labels(place.county_name if place else "").inc(
                    elapsed / 60)

    def _finish(self, run: _Run) -> None:
        self._accrue(run)
        now = time.time()
        run.ended_at = now
        for viewer in run.viewers.values():
            if viewer.seats and viewer.left_at is None:
                viewer.left_at = now
            viewer.seats.clear()
        for seat in self._seats.values():
            if seat.run == run.id:
                seat.run = None
        places = self.registry.directory.places
        needed = self.settings.coverage_share * run.occurrence.lesson.duration_s
        reached: Counter[str] = Counter()
        targets: Counter[str] = Counter()
        for classroom, viewer in run.viewers.items():
            if not viewer.target:
                continue
            place = places.get(classroom)
            county = place.county_name if place else ""
            targets[county] += 1
            reached[county] += viewer.watched_s >= needed
        total = sum(targets.values())
        run.coverage = round(sum(reached.values()) / total, 4) if total else None
        for county, count in targets.items():
            self.metrics.coverage.labels(county).set(reached[county] / count)
        room_county = self.registry.directory.county_of_room(run.occurrence.lesson.room)
        self.metrics.lessons_finished.labels(room_county).inc()
        del self._runs[run.id]
        if self._room_runs.get(run.occurrence.lesson.room) == run.id:
            del self._room_runs[run.occurrence.lesson.room]
        self._ended[run.id] = run
        logger.info("scheduled lesson %s in room %s ended: coverage %s", run.id,
                    run.occurrence.lesson.room, run.coverage)

    def live_state(self) -> LiveState:
        """The metrics' "now" gauges (called at scrape time; in memory only)."""
        directory = self.registry.directory
        classrooms: Counter[tuple[str, str]] = Counter()
        for classroom in {seat.classroom for seat in self._seats.values()}:
            place = directory.places.get(classroom)
            if place is not None:
                classrooms[(place.county_name, place.school_name)] += 1
        live: Counter[str] = Counter()
        without: Counter[str] = Counter()
        now = time.time()
        for run in self._runs.values():
            county = directory.county_of_room(run.occurrence.lesson.room)
            if run.live:
                live[county] += 1
            elif run.occurrence.starts_at <= now < run.occurrence.ends_at:
                without[county] += 1
        late: Counter[str] = Counter()
        for occurrence in self.timetable.occurrences_between(now, now):
            if (occurrence.starts_at + self.settings.late_after_s <= now
                    and occurrence.run_id not in self._runs
                    and occurrence.run_id not in self._ended):
                late[directory.county_of_room(occurrence.lesson.room)] += 1
        return LiveState(dict(classrooms), dict(live), dict(late), dict(without))

    # --- the ticker -------------------------------------------------------------------------
    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sample_interval_s)
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("attendance tick failed")

    async def tick(self) -> None:
        """Sample quality, accrue watch time, end lessons whose teacher is gone, persist."""
        for seat in list(self._seats.values()):
            run = self._runs.get(seat.run) if seat.run is not None else None
            if run is not None and run.live:
                await self._sample(run, seat)
        monotonic = time.monotonic()
        changed = list(self._runs.values())
        for run in changed:
            self._accrue(run)
            if (not run.live and run.not_live_since is not None
                    and monotonic - run.not_live_since >= self.settings.end_grace_s):
                self._finish(run)
        now = time.time()
        for run_id, run in list(self._ended.items()):
            if run.occurrence.ends_at < now:
                del self._ended[run_id]
        await self._persist(changed)

    async def _sample(self, run: _Run, seat: _Seat) -> None:
        try:
            quality = await sample_link(seat.session, seat.quality)
        except Exception as exc:  # a session closing under us
            logger.debug("sampling %s failed: %s", seat.session.id[:8], exc)
            return
        previous, seat.quality = seat.quality, quality
        viewer = run.viewers.get(seat.classroom)
        place = self.registry.directory.places.get(seat.classroom)
        if viewer is None or place is None:
            return
        viewer.samples += 1
        if quality.rtt_ms is not None:
            viewer.rtt_sum += quality.rtt_ms
            viewer.rtt_n += 1
            self.metrics.rtt.labels(place.county_name).observe(quality.rtt_ms / 1000)
        if quality.loss is not None:
            viewer.loss_sum += quality.loss
            viewer.loss_n += 1
            self.metrics.loss.labels(place.county_name).observe(quality.loss)
        silent = await _reports_silent(seat.session)
        if previous is not None and (
                silent or (quality.loss is not None and quality.loss >= FREEZE_LOSS)
                or (quality.kbps is not None and quality.kbps < STALL_KBPS)):
            viewer.freeze_s += quality.sampled_at - previous.sampled_at

    # --- reading and writing ----------------------------------------------------------------
    def _frozen(self, run: _Run) -> LessonRun:
        o = run.occurrence
        return LessonRun(
            id=run.id, lesson=o.lesson.id, room=o.lesson.room, starts_at=o.starts_at,
            ends_at=o.ends_at, live_at=run.live_at, ended_at=run.ended_at,
            recording=run.recording, coverage=run.coverage,
            attendance=tuple(v.frozen(c) for c, v in sorted(run.viewers.items())))

    async def _persist(self, runs: list[_Run]) -> None:
        if not runs:
            return
        frozen = [self._frozen(run) for run in runs]
        await self.db.write(lambda conn: _save(conn, frozen))

    async def get(self, key: str) -> LessonRun:
        """A delivered lesson by its run id (`<lesson>-<yyyymmdd>`) or its recording's id."""
        for run in (*self._runs.values(), *self._ended.values()):
            if key in (run.id, run.recording):
                if run.ended_at is None:
                    self._accrue(run)
                return self._frozen(run)
        found = await self.db.read(lambda conn: _load(conn, key))
        if found is None:
            raise NotFound(f"no delivered lesson {key!r}: use a timetable lesson's run id "
                           "(<lesson>-<yyyymmdd>) or the id of its recording")
        return found

    async def runs_of(self, lesson_id: int) -> list[LessonRun]:
        stored = await self.db.read(lambda conn: [
            r for r in (_load(conn, row[0]) for row in conn.execute(
                "SELECT id FROM lesson_runs WHERE lesson_id = ? ORDER BY starts_at",
                (lesson_id,))) if r is not None])
        current = {run.id: self._frozen(run) for run in (*self._runs.values(),
                                                         *self._ended.values())
                   if run.occurrence.lesson.id == lesson_id}
        return [current.get(r.id, r) for r in stored] + [
            r for r in current.values() if r.id not in {s.id for s in stored}]


async def _reports_silent(session: PeerSession) -> bool:
    """Whether the classroom has sent no receiver report for its video for a while (none at
    all counts once the session is older than that)."""
    for transceiver in session.pc.getTransceivers():
        sender = transceiver.sender
        if transceiver.kind != "video" or sender is None or sender.track is None:
            continue
        stats = await sender.getStats()
        stamps = [item.timestamp for item in stats.values() if item.type == "remote-inbound-rtp"]
        if not stamps:
            return time.monotonic() - session.created_at > SILENT_REPORTS_S
        age = datetime.datetime.now(datetime.UTC) - max(stamps)
        return age.total_seconds() > SILENT_REPORTS_S
    return False


def _save(conn: sqlite3.Connection, runs: list[LessonRun]) -> None:
    for run in runs:
        conn.execute(
            "INSERT INTO lesson_runs (id, lesson_id, room, starts_at, ends_at, live_at, "
            "ended_at, recording_id, coverage) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET live_at = excluded.live_at, "
            "ended_at = excluded.ended_at, recording_id = excluded.recording_id, "
            "coverage = excluded.coverage",
            (run.id, run.lesson, run.room, run.starts_at, run.ends_at, run.live_at,
             run.ended_at, run.recording, run.coverage))
        conn.execute("DELETE FROM attendance WHERE run_id = ?", (run.id,))
        conn.executemany(
            "INSERT INTO attendance (run_id, classroom_id, target, joined_at, left_at, "
            "watched_s, joins, join_latency_s, rtt_ms, loss, freeze_s, samples) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(run.id, a.classroom, int(a.target), a.joined_at, a.left_at, a.watched_s, a.joins,
              a.join_latency_s, a.rtt_ms, a.loss, a.freeze_s, a.samples)
             for a in run.attendance])


def _unfinished(conn: sqlite3.Connection) -> list[LessonRun]:
    ids = [r[0] for r in conn.execute("SELECT id FROM lesson_runs WHERE ended_at IS NULL")]
    return [run for run in (_load(conn, run_id) for run_id in ids) if run is not None]


def _load(conn: sqlite3.Connection, key: str) -> LessonRun | None:
    row = conn.execute("SELECT * FROM lesson_runs WHERE id = ? OR recording_id = ? LIMIT 1",
                       (key, key)).fetchone()
    if row is None:
        return None
    attendance = tuple(
        Attendance(a["classroom_id"], bool(a["target"]), a["joined_at"], a["left_at"],
                   a["watched_s"], a["joins"], a["join_latency_s"], a["rtt_ms"], a["loss"],
                   a["freeze_s"], a["samples"])
        for a in conn.execute("SELECT * FROM attendance WHERE run_id = ? ORDER BY classroom_id",
                              (row["id"],)))
    return LessonRun(row["id"], row["lesson_id"], row["room"], row["starts_at"], row["ends_at"],
                     row["live_at"], row["ended_at"], row["recording_id"], row["coverage"],
                     attendance)
