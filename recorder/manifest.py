"""`manifest.json`: what the archive knows about one recorded lesson (the catalog's source)."""

from __future__ import annotations

import builtins
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

SCHEMA = 1


@dataclass(frozen=True)
class LessonInfo:
    """Who taught what; supplied by the timetable or the teacher, all optional."""

    school: str = ""
    teacher: str = ""
    subject: str = ""
    grade: str = ""
    title: str = ""
    county: str = ""  # the school's county (the catalog reads it from the manifest's extra)


@dataclass(frozen=True)
class LessonQuestion:
    """A raised hand (empty text) or question a classroom sent during the lesson."""

    classroom: str
    text: str
    asked_at: float  # Unix time
    answered_at: float | None = None


@dataclass(frozen=True)
class Manifest:
    id: str
    room: str
    lesson: LessonInfo
    started_at: float
    ended_at: float
    duration_s: float
    segments: int
    codecs: dict[str, str]
    bytes: int
    status: str  # "complete", "interrupted", "stopped"
    playlist: str  # object key
    thumbnail: str | None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    questions: tuple[LessonQuestion, ...] = ()

    def to_json(self) -> builtins.bytes:
        data = dataclasses.asdict(self)
        data["schema"] = SCHEMA
        return json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: builtins.bytes) -> Manifest:
        data = json.loads(raw)
        data.pop("schema", None)
        data["lesson"] = LessonInfo(**data["lesson"])
        data["questions"] = tuple(LessonQuestion(**q) for q in data.get("questions") or ())
        return cls(**data)
