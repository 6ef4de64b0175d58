"""The lesson as the catalog knows it, read from a recording's `manifest.json`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from catalog.errors import CorruptManifest

STATUSES = ("complete", "interrupted", "stopped", "missing")


@dataclass(frozen=True)
class Lesson:
    id: str
    room: str
    school: str
    county: str
    teacher: str
    subject: str
    grade: str
    title: str
    description: str
    tags: tuple[str, ...]
    started_at: float
    duration_s: float
    thumbnail: str | None  # object key
    status: str
    playlist: str  # object key
    size_bytes: int
    segments: int
    codecs: dict[str, str] = field(default_factory=dict)

    @property
    def prefix(self) -> str:
        """The folder of the lesson's objects in the bucket."""
        return self.playlist.rsplit("/", 1)[0] + "/"


def lesson_from_manifest(raw: bytes, key: str = "manifest.json") -> Lesson:
    """Read a recorder manifest; CorruptManifest names what is wrong with it."""
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise TypeError("not a JSON object")
        info = data.get("lesson") or {}
        extra = data.get("extra") or {}
        tags = extra.get("tags") or []
        if not isinstance(tags, list):
            raise TypeError("extra.tags is not a list")
        return Lesson(
            id=str(data["id"]), room=str(data["room"]),
            school=str(info.get("school", "")), county=str(extra.get("county", "")),
            teacher=str(info.get("teacher", "")), subject=str(info.get("subject", "")),
            grade=str(info.get("grade", "")), title=str(info.get("title", "")),
            description=str(extra.get("description", "")), tags=tuple(str(t) for t in tags),
            started_at=float(data["started_at"]), duration_s=float(data["duration_s"]),
            thumbnail=data.get("thumbnail"), status=str(data["status"]),
            playlist=str(data["playlist"]), size_bytes=int(data.get("bytes", 0)),
            segments=int(data.get("segments", 0)),
            codecs={str(k): str(v) for k, v in (data.get("codecs") or {}).items()})
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise CorruptManifest(f"{key}: {type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True)
class LessonQuestion:
    """A raised hand (empty text) or question a classroom sent during the lesson."""

    classroom: str
    text: str
    asked_at: float
    answered: bool


def questions_from_manifest(raw: bytes, key: str = "manifest.json") -> tuple[LessonQuestion, ...]:
    """The classrooms' questions a recorder manifest keeps (none in older manifests)."""
    try:
        data = json.loads(raw)
        items = data.get("questions") or [] if isinstance(data, dict) else []
        if not isinstance(items, list):
            raise TypeError("questions is not a list")
        return tuple(LessonQuestion(str(q.get("classroom", "")), str(q.get("text", "")),
                                    float(q["asked_at"]), q.get("answered_at") is not None)
                     for q in items)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise CorruptManifest(f"{key}: questions: {type(exc).__name__}: {exc}") from exc


def edited_manifest(raw: bytes, *, title: str | None = None, description: str | None = None,
                    tags: tuple[str, ...] | None = None) -> bytes:
    """The manifest with a teacher's edits applied; every other field kept as it was."""
    data: dict[str, Any] = json.loads(raw)
    if title is not None:
        data.setdefault("lesson", {})["title"] = title
    extra = data.setdefault("extra", {})
    if description is not None:
        extra["description"] = description
    if tags is not None:
        extra["tags"] = list(tags)
    return json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True).encode()
