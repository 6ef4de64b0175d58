"""JSON API for live rooms, plus health and Prometheus metrics."""

from __future__ import annotations

import dataclasses

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from recorder.manifest import LessonInfo
from recorder.recorder import RecordingInfo
from server.errors import BadRequest
from server.http import claims, json_body
from server.keys import CLASSROOMS_KEY, RECORDINGS_KEY, REGISTRY_KEY, RELAY_KEY
from server.rooms import RoomInfo


def _room_json(info: RoomInfo) -> dict[str, object]:
    data = dataclasses.asdict(info)
    data["subscriber_count"] = info.subscriber_count
    return data


async def list_rooms(request: web.Request) -> web.Response:
    claims(request)
    rooms = request.app[RELAY_KEY].room_infos()
    return web.json_response({"rooms": [_room_json(r) for r in rooms]})


async def get_room(request: web.Request) -> web.Response:
    who = claims(request)
    room = request.match_info["room"]
    who.require_watch(room)
    data = _room_json(request.app[RELAY_KEY].room_info(room))
    if who.may_publish(room):  # the teacher (or an admin) sees each classroom's link
        data["classrooms"] = [c.to_json() for c in request.app[CLASSROOMS_KEY].classrooms(room)]
    return web.json_response(data)


async def get_recording(request: web.Request) -> web.Response:
    who = claims(request)
    room = request.match_info["room"]
    who.require_watch(room)
    info, error = request.app[RECORDINGS_KEY].status(room)
    return web.json_response({"room": room, "recording": _recording_json(info),
                              "error": error})


async def control_recording(request: web.Request) -> web.Response:
    """`{"action": "start", "title": …, "subject": …, "grade": …, "school": …}` or
    `{"action": "stop"}`: the room's teacher or an admin."""
    who = claims(request)
    room = request.match_info["room"]
    who.require_publish(room)
    body = await json_body(request, 'the body must be JSON, e.g. {"action": "start"}')
    if not isinstance(body, dict) or body.get("action") not in ("start", "stop"):
        raise BadRequest('"action" must be "start" or "stop"')
    service = request.app[RECORDINGS_KEY]
    if body["action"] == "stop":
        await service.stop(room)
    else:
        fields = {}
        for name in ("title", "subject", "grade", "school"):
            value = body.get(name, "")
            if not isinstance(value, str) or len(value) > 200:
                raise BadRequest(f'"{name}" must be text of at most 200 characters')
            fields[name] = value.strip()
        await service.start(room, LessonInfo(teacher=who.subject, **fields))
    info, error = service.status(room)
    return web.json_response({"room": room, "recording": _recording_json(info),
                              "error": error})


def _recording_json(info: RecordingInfo | None) -> dict[str, object] | None:
    return dataclasses.asdict(info) if info is not None else None


async def healthz(request: web.Request) -> web.Response:
    relay = request.app[RELAY_KEY]
    return web.json_response({"status": "ok", "rooms": len(relay.rooms),
                              "sessions": len(relay.sessions)})


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[REGISTRY_KEY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/rooms", list_rooms)
    app.router.add_get("/api/rooms/{room}", get_room)
    app.router.add_get("/api/rooms/{room}/recording", get_recording)
    app.router.add_post("/api/rooms/{room}/recording", control_recording)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
