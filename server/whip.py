"""WHIP (RFC 9725) and WHEP endpoints: `POST /whip/{room}`, `POST /whep/{room}`, and the
session resources they create (`PATCH` trickle ICE, `DELETE`, `OPTIONS`), plus a classroom
session's level (`GET`/`PUT /whep/{room}/{session}/level`: full stream, low rendition or
audio only, and the ceiling the classroom pinned)."""

from __future__ import annotations

import dataclasses

from aiohttp import web

from server import sdp
from server.adaptation import Level
from server.errors import BadRequest, Conflict, Unprocessable
from server.http import CORS_HEADERS, claims, json_body, read_body
from server.keys import RELAY_KEY, SETTINGS_KEY
from server.sessions import PeerSession, Role

SDP = "application/sdp"
SDPFRAG = "application/trickle-ice-sdpfrag"


def room_name(request: web.Request) -> str:
    room = request.match_info["room"]
    if not room or len(room) > 64 or not all(c.isalnum() or c in "-_." for c in room):
        raise web.HTTPNotFound(text="room names are 1-64 letters, digits, '-', '_' or '.'")
    return room


def _created(request: web.Request, prefix: str, session: PeerSession, answer: str) -> web.Response:
    location = f"/{prefix}/{session.room}/{session.id}"
    return web.Response(status=201, body=answer.encode(), content_type=SDP,
                        headers={"Location": location, **CORS_HEADERS})


async def whip_post(request: web.Request) -> web.Response:
    room = room_name(request)
    who = claims(request)
    who.require_publish(room)
    offer = await read_body(request, SDP, request.app[SETTINGS_KEY].http.max_sdp_bytes)
    answer = await request.app[RELAY_KEY].publish(room, offer, who.subject)
    return _created(request, "whip", answer.session, answer.sdp)


async def whep_post(request: web.Request) -> web.Response:
    room = room_name(request)
    who = claims(request)
    who.require_watch(room)
    offer = await read_body(request, SDP, request.app[SETTINGS_KEY].http.max_sdp_bytes)
    answer = await request.app[RELAY_KEY].subscribe(room, offer, who.subject)
    return _created(request, "whep", answer.session, answer.sdp)


def _session(request: web.Request, role: Role) -> PeerSession:
    room = room_name(request)
    who = claims(request)
    if role is Role.PUBLISHER:
        who.require_publish(room)
    else:
        who.require_watch(room)
    return request.app[RELAY_KEY].session(room, request.match_info["session"], role)


async def _patch(request: web.Request, role: Role) -> web.Response:
    session = _session(request, role)
    text = await read_body(request, SDPFRAG, request.app[SETTINGS_KEY].http.max_sdp_bytes)
    if "If-Match" in request.headers:
        raise Unprocessable("ICE restarts are not supported; start a new session instead")
    fragment = sdp.parse_fragment(text)
    remote = session.pc.remoteDescription
    if fragment.ufrag and remote is not None and f"a=ice-ufrag:{fragment.ufrag}" not in remote.sdp:
        raise Unprocessable("the fragment's ICE ufrag is not this session's: ICE restarts are "
                            "not supported; start a new session instead")
    await request.app[RELAY_KEY].trickle(session, fragment)
    return web.Response(status=204, headers=CORS_HEADERS)


async def _delete(request: web.Request, role: Role) -> web.Response:
    session = _session(request, role)
    await session.close("deleted")
    return web.Response(status=200, headers=CORS_HEADERS)


async def whip_patch(request: web.Request) -> web.Response:
    return await _patch(request, Role.PUBLISHER)


async def whep_patch(request: web.Request) -> web.Response:
    return await _patch(request, Role.SUBSCRIBER)


async def whip_delete(request: web.Request) -> web.Response:
    return await _delete(request, Role.PUBLISHER)


async def whep_delete(request: web.Request) -> web.Response:
    return await _delete(request, Role.SUBSCRIBER)


async def options(request: web.Request) -> web.Response:
    """CORS preflight: no token, no TURN credentials computed."""
    headers = dict(CORS_HEADERS)
    if "session" not in request.match_info:
        headers["Accept-Post"] = SDP
    return web.Response(status=204, headers=headers)


async def get_level(request: web.Request) -> web.Response:
    session = _session(request, Role.SUBSCRIBER)
    info = request.app[RELAY_KEY].level_info(session.id)
    if info is None:
        raise Conflict("this session receives no camera video, so it has no level")
    return web.json_response(dataclasses.asdict(info), headers=CORS_HEADERS)


async def put_level(request: web.Request) -> web.Response:
    """`{"pin": "low"}` keeps the classroom at the low rendition or below ("低流量模式"),
    `{"pin": "audio"}` at audio only, `{"pin": null}` lets its link decide again."""
    session = _session(request, Role.SUBSCRIBER)
    body = await json_body(request, 'the body must be JSON, e.g. {"pin": "low"}')
    pins = [level.value for level in Level]
    if not isinstance(body, dict) or "pin" not in body or (
            body["pin"] is not None and body["pin"] not in pins):
        raise BadRequest(f'"pin" must be one of {", ".join(pins)} or null')
    ceiling = None if body["pin"] is None else Level(body["pin"])
    info = request.app[RELAY_KEY].pin_level(session, ceiling)
    return web.json_response(dataclasses.asdict(info), headers=CORS_HEADERS)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/whip/{room}", whip_post)
    app.router.add_post("/whep/{room}", whep_post)
    app.router.add_patch("/whip/{room}/{session}", whip_patch)
    app.router.add_patch("/whep/{room}/{session}", whep_patch)
    app.router.add_delete("/whip/{room}/{session}", whip_delete)
    app.router.add_delete("/whep/{room}/{session}", whep_delete)
    app.router.add_get("/whep/{room}/{session}/level", get_level)
    app.router.add_put("/whep/{room}/{session}/level", put_level)
    for path in ("/whip/{room}", "/whep/{room}", "/whip/{room}/{session}",
                 "/whep/{room}/{session}", "/whep/{room}/{session}/level"):
        app.router.add_route("OPTIONS", path, options)
