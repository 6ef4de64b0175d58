"""The registry's and timetable's records: frozen, JSON-ready, built from SQLite rows."""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("showcase", "receiving")
WEEK_S = 7 * 24 * 3600


@dataclass(frozen=True)
class County:
    id: int
    name: str


@dataclass(frozen=True)
class School:
    id: int
    name: str
    county: int
    kind: str  # "showcase" (teaches) or "receiving" (watches)


@dataclass(frozen=True)
class Classroom:
    id: int
    name: str
    school: int


@dataclass(frozen=True)
class Teacher:
    id: int
    name: str
    school: int
    subject: str


@dataclass(frozen=True)
class Room:
    """A showcase classroom's channel: the relay's room of the same name."""

    name: str
    classroom: int
    title: str
    pairings: tuple[int, ...]  # receiving classrooms it delivers to


@dataclass(frozen=True)
class Place:
    """Where a classroom is, for labels and reports."""

    classroom: int
    classroom_name: str
    school: int
    school_name: str
    school_kind: str
    county: int
    county_name: str


@dataclass(frozen=True)
class ScheduledLesson:
    id: int
    room: str
    teacher: int | None
    subject: str
    grade: str
    title: str
    starts_at: float  # unix time of the first occurrence
    ends_at: float
    weeks: int  # occurrences, one a week (1: once)
    targets: tuple[int, ...]  # classrooms expected to watch

    @property
    def duration_s(self) -> float:
        return self.ends_at - self.starts_at

    def occurrences(self) -> list[tuple[float, float]]:
        return [(self.starts_at + k * WEEK_S, self.ends_at + k * WEEK_S)
                for k in range(self.weeks)]

    def occurrence_at(self, t: float, early_s: float = 0.0) -> tuple[float, float] | None:
        """The occurrence that `t` falls in (up to `early_s` before its start counts)."""
        for start, end in self.occurrences():
            if start - early_s <= t < end:
                return start, end
        return None

    def overlaps(self, other: ScheduledLesson) -> tuple[float, float] | None:
        """The first of this lesson's occurrences that overlaps one of `other`'s."""
        theirs = other.occurrences()
        for start, end in self.occurrences():
            for o_start, o_end in theirs:
                if start < o_end and o_start < end:
                    return start, end
        return None


@dataclass(frozen=True)
class Attendance:
    """One classroom in one delivered lesson."""

    classroom: int
    target: bool
    joined_at: float | None  # first time it received the lesson
    left_at: float | None  # last time it left (None: still watching or never came)
    watched_s: float  # time it was connected while the teacher was live
    joins: int
    join_latency_s: float | None  # its first join: offer to first video frame
    rtt_ms: float | None  # mean of the receiver-report samples
    loss: float | None  # mean fraction lost, 0..1
    freeze_s: float  # sampled time with heavy loss or nothing sent to it while live
    samples: int

    @property
    def reconnects(self) -> int:
        return max(0, self.joins - 1)


@dataclass(frozen=True)
class LessonRun:
    """One occurrence of a scheduled lesson that went live: who was expected, who came."""

    id: str
    lesson: int
    room: str
    starts_at: float  # scheduled
    ends_at: float
    live_at: float | None
    ended_at: float | None  # None: still running
    recording: str | None
    coverage: float | None  # share of targets that watched enough (set when it ends)
    attendance: tuple[Attendance, ...]
