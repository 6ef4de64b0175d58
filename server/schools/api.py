"""The schools HTTP API (JSON): registry CRUD and CSV import, the timetable, and attendance.

Registry and timetable changes need an admin token; the timetable may be read with any token;
a lesson's attendance by an admin or the room's teacher."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from aiohttp import web

from server.errors import (
    BadRequest,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from server.http import claims, json_body
from server.keys import (
    ATTENDANCE_KEY,
    ISSUER_KEY,
    SCHOOL_REGISTRY_KEY,
    SETTINGS_KEY,
    TIMETABLE_KEY,
)
from server.schools import csvimport
from server.schools.models import LessonRun
from server.schools.registry import KIND_SPECS, Directory
from server.schools.timetable import LessonDraft, parse_time, targets_of
from server.tokens import Role, classroom_subject, parse_ttl

ROOM_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
OPTIONAL = {"subject", "title"}
MAX_CSV_BYTES = 5 * 1024 * 1024


async def _json(request: web.Request) -> dict[str, Any]:
    body = await json_body(request, "the body must be a JSON object")
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _kind(request: web.Request) -> str:
    kind = request.match_info["kind"]
    if kind not in KIND_SPECS:
        raise NotFound(f"the registry has {', '.join(KIND_SPECS)}, not {kind!r}")
    return kind


def _key(kind: str, raw: str) -> int | str:
    if KIND_SPECS[kind].key == "name":
        return raw
    if not raw.isdigit():
        raise NotFound(f"no {KIND_SPECS[kind].name} {raw!r} (ids are numbers)")
    return int(raw)


def _values(kind: str, body: dict[str, Any], creating: bool) -> dict[str, Any]:
    spec = KIND_SPECS[kind]
    unknown = set(body) - set(spec.fields)
    if unknown:
        raise BadRequest(f"a {spec.name} has {', '.join(spec.fields)}; not "
                         f"{', '.join(sorted(unknown))}")
    if not creating and spec.key in body:
        raise BadRequest(f"a {spec.name}'s {spec.key} cannot be changed")
    values: dict[str, Any] = {}
    for name in spec.fields:
        if name not in body:
            if creating and name not in OPTIONAL:
                raise BadRequest(f'a {spec.name} needs "{name}"')
            continue
        value = body[name]
        if name in spec.refs:
            if not isinstance(value, int) or isinstance(value, bool):
                raise BadRequest(f'"{name}" must be the id (a number) of a {name}')
        elif not isinstance(value, str) or len(value.strip()) > 200 or (
                name not in OPTIONAL and not value.strip()):
            raise BadRequest(f'"{name}" must be text of 1 to 200 characters')
        else:
            value = value.strip()
        values[name] = value
    if kind == "rooms" and "name" in values and not ROOM_NAME.match(values["name"]):
        raise BadRequest('a room name is 1 to 64 letters, digits, "_", "-" or "."')
    return values


def _record(value: Any) -> dict[str, Any]:
    return dataclasses.asdict(value)


# --- registry ---------------------------------------------------------------------------------
async def list_records(request: web.Request) -> web.Response:
    claims(request).require_admin()
    kind = _kind(request)
    records = await request.app[SCHOOL_REGISTRY_KEY].list(kind)
    return web.json_response({kind: [_record(r) for r in records]})


async def get_record(request: web.Request) -> web.Response:
    claims(request).require_admin()
    kind = _kind(request)
    record = await request.app[SCHOOL_REGISTRY_KEY].get(
        kind, _key(kind, request.match_info["key"]))
    return web.json_response(_record(record))


async def create_record(request: web.Request) -> web.Response:
    claims(request).require_admin()
    kind = _kind(request)
    values = _values(kind, await _json(request), creating=True)
    record = await request.app[SCHOOL_REGISTRY_KEY].create(kind, values)
    return web.json_response(_record(record), status=201)


async def update_record(request: web.Request) -> web.Response:
    claims(request).require_admin()
    kind = _kind(request)
    values = _values(kind, await _json(request), creating=False)
    record = await request.app[SCHOOL_REGISTRY_KEY].update(
        kind, _key(kind, request.match_info["key"]), values)
    return web.json_response(_record(record))


async def delete_record(request: web.Request) -> web.Response:
    claims(request).require_admin()
    kind = _kind(request)
    await request.app[SCHOOL_REGISTRY_KEY].delete(kind, _key(kind, request.match_info["key"]))
    return web.Response(status=204)


async def set_pairings(request: web.Request) -> web.Response:
    """`{"classrooms": [ids], "schools": [ids]}`: the receiving classrooms the room delivers to
    (replacing the previous list; a school means all its classrooms)."""
    claims(request).require_admin()
    body = await _json(request)
    lists = {}
    for name in ("classrooms", "schools"):
        value = body.get(name, [])
        if not isinstance(value, list) or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise BadRequest(f'"{name}" must be a list of ids')
        lists[name] = value
    if set(body) - {"classrooms", "schools"}:
        raise BadRequest('send "classrooms" and/or "schools"')
    room = await request.app[SCHOOL_REGISTRY_KEY].set_pairings(
        request.match_info["key"], lists["classrooms"], lists["schools"])
    return web.json_response(_record(room))


async def classroom_token(request: web.Request) -> web.Response:
    """A long-lived token for a classroom device: `{"ttl": "365d"}` (default a year)."""
    claims(request).require_admin()
    key = _key("classrooms", request.match_info["key"])
    classroom = await request.app[SCHOOL_REGISTRY_KEY].get("classrooms", key)
    body = await _json(request) if request.can_read_body else {}
    try:
        ttl = parse_ttl(str(body.get("ttl", "365d")))
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
    token = request.app[ISSUER_KEY].mint(Role.CLASSROOM, None, ttl,
                                         classroom_subject(classroom.id))
    return web.json_response({"classroom": classroom.id, "token": token, "ttl_s": ttl},
                             status=201)


async def import_csv(request: web.Request) -> web.Response:
    """The school list as CSV (`text/csv`; `?encoding=gbk` or detected): all rows or none."""
    claims(request).require_admin()
    if request.content_type.lower() not in ("text/csv", "text/plain", "application/csv"):
        raise UnsupportedMediaType(f"Content-Type must be text/csv, not "
                                   f"{request.content_type or 'missing'}")
    if request.content_length is not None and request.content_length > MAX_CSV_BYTES:
        raise PayloadTooLarge(f"the file is {request.content_length} bytes; at most "
                              f"{MAX_CSV_BYTES}")
    data = await request.content.read()
    if len(data) > MAX_CSV_BYTES:
        raise PayloadTooLarge(f"the file is larger than {MAX_CSV_BYTES} bytes")
    text = csvimport.decode(data, request.query.get("encoding", "")
                            or request.charset or "")
    rows = csvimport.parse(text)
    report = await request.app[SCHOOL_REGISTRY_KEY].apply(
        lambda conn: csvimport.apply(conn, rows))
    return web.json_response(dataclasses.asdict(report), status=201)


# --- timetable --------------------------------------------------------------------------------
def _lesson_json(request: web.Request, lesson: Any) -> dict[str, Any]:
    timetable = request.app[TIMETABLE_KEY]
    data = _record(lesson)
    data["start"] = timetable.format(lesson.starts_at)
    data["end"] = timetable.format(lesson.ends_at)
    return data


async def list_lessons(request: web.Request) -> web.Response:
    claims(request)
    tz = request.app[TIMETABLE_KEY].tz
    since = parse_time(request.query["from"], tz, "from") if "from" in request.query else None
    until = parse_time(request.query["to"], tz, "to") if "to" in request.query else None
    lessons = request.app[TIMETABLE_KEY].find(request.query.get("room"), since, until)
    return web.json_response({"lessons": [_lesson_json(request, lesson) for lesson in lessons]})


async def create_lesson(request: web.Request) -> web.Response:
    """`{"room", "teacher", "subject", "grade", "title", "start", "end", "weeks", "targets"}`"""
    claims(request).require_admin()
    body = await _json(request)
    known = {"room", "teacher", "subject", "grade", "title", "start", "end", "weeks", "targets"}
    if set(body) - known:
        raise BadRequest(f"a lesson has {', '.join(sorted(known))}; not "
                         f"{', '.join(sorted(set(body) - known))}")
    for name in ("room", "title", "start", "end"):
        if name not in body:
            raise BadRequest(f'a lesson needs "{name}"')
    texts = {}
    for name in ("room", "subject", "grade", "title"):
        value = body.get(name, "")
        if not isinstance(value, str) or len(value) > 200:
            raise BadRequest(f'"{name}" must be text of at most 200 characters')
        texts[name] = value.strip()
    teacher = body.get("teacher")
    if teacher is not None and (not isinstance(teacher, int) or isinstance(teacher, bool)):
        raise BadRequest('"teacher" must be a teacher id')
    weeks = body.get("weeks", 1)
    if not isinstance(weeks, int) or isinstance(weeks, bool):
        raise BadRequest('"weeks" must be a whole number')
    tz = request.app[TIMETABLE_KEY].tz
    draft = LessonDraft(room=texts["room"], teacher=teacher, subject=texts["subject"],
                        grade=texts["grade"], title=texts["title"],
                        starts_at=parse_time(body["start"], tz, "start"),
                        ends_at=parse_time(body["end"], tz, "end"), weeks=weeks,
                        targets=targets_of(body.get("targets")))
    lesson = await request.app[TIMETABLE_KEY].create(draft)
    return web.json_response(_lesson_json(request, lesson), status=201)


async def get_lesson(request: web.Request) -> web.Response:
    claims(request)
    lesson = request.app[TIMETABLE_KEY].get(_lesson_id(request))
    runs = await request.app[ATTENDANCE_KEY].runs_of(lesson.id)
    return web.json_response({**_lesson_json(request, lesson),
                              "runs": [_run_json(request, run) for run in runs]})


async def delete_lesson(request: web.Request) -> web.Response:
    claims(request).require_admin()
    await request.app[TIMETABLE_KEY].delete(_lesson_id(request))
    return web.Response(status=204)


def _lesson_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not raw.isdigit():
        raise NotFound(f"no scheduled lesson {raw!r}")
    return int(raw)


# --- attendance -------------------------------------------------------------------------------
async def attendance(request: web.Request) -> web.Response:
    """Who was expected at a delivered lesson, who came, for how long, and the coverage."""
    who = claims(request)
    run = await request.app[ATTENDANCE_KEY].get(request.match_info["id"])
    if not who.may_publish(run.room):
        raise Forbidden("only an admin or the room's teacher may see a lesson's attendance")
    return web.json_response(_run_json(request, run))


def _run_json(request: web.Request, run: LessonRun) -> dict[str, Any]:
    settings = request.app[SETTINGS_KEY].schools
    directory: Directory = request.app[SCHOOL_REGISTRY_KEY].directory
    timetable = request.app[TIMETABLE_KEY]
    duration = run.ends_at - run.starts_at
    needed = settings.coverage_share * duration
    classrooms = []
    for a in run.attendance:
        place = directory.places.get(a.classroom)
        classrooms.append({
            "classroom": a.classroom, "name": place.classroom_name if place else "",
            "school": place.school_name if place else "",
            "county": place.county_name if place else "", "target": a.target,
            "joined_at": a.joined_at, "left_at": a.left_at,
            "minutes_watched": round(a.watched_s / 60, 2), "seconds_watched": a.watched_s,
            "watched_share": round(min(a.watched_s / duration, 1.0), 4) if duration else 0.0,
            "reached": a.watched_s >= needed, "reconnects": a.reconnects,
            "join_latency_s": a.join_latency_s, "rtt_ms": a.rtt_ms, "loss": a.loss,
            "freeze_s": a.freeze_s, "quality_samples": a.samples})
    targets = [c for c in classrooms if c["target"]]
    reached = sum(1 for c in targets if c["reached"])
    return {
        "id": run.id, "lesson": run.lesson, "room": run.room,
        "start": timetable.format(run.starts_at), "end": timetable.format(run.ends_at),
        "starts_at": run.starts_at, "ends_at": run.ends_at, "live_at": run.live_at,
        "ended_at": run.ended_at, "status": "live" if run.ended_at is None else "ended",
        "recording": run.recording,
        "coverage": {"ratio": round(reached / len(targets), 4) if targets else None,
                     "reached": reached, "targets": len(targets),
                     "share_required": settings.coverage_share,
                     "minutes_required": round(needed / 60, 2)},
        "classrooms": classrooms}


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/registry/import", import_csv)
    app.router.add_put("/api/registry/rooms/{key}/pairings", set_pairings)
    app.router.add_post("/api/registry/classrooms/{key}/token", classroom_token)
    app.router.add_get("/api/registry/{kind}", list_records)
    app.router.add_post("/api/registry/{kind}", create_record)
    app.router.add_get("/api/registry/{kind}/{key}", get_record)
    app.router.add_patch("/api/registry/{kind}/{key}", update_record)
    app.router.add_delete("/api/registry/{kind}/{key}", delete_record)
    app.router.add_get("/api/timetable", list_lessons)
    app.router.add_post("/api/timetable", create_lesson)
    app.router.add_get("/api/timetable/{id}", get_lesson)
    app.router.add_delete("/api/timetable/{id}", delete_lesson)
    app.router.add_get("/api/lessons/{id}/attendance", attendance)
