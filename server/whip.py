"""WHIP (RFC 9725) and WHEP endpoints: `POST /whip/{room}`, `POST /whep/{room}`, and the
session resources they create (`PATCH` trickle ICE, `DELETE`, `OPTIONS`)."""

from __future__ import annotations

from aiohttp import web

from server import sdp
from server.errors import Unprocessable
from server.http import CORS_HEADERS, claims, read_body
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


def add_routes(app: web.Application) -> None:
    app.router.add_post("/whip/{room}", whip_post)
    app.router.add_post("/whep/{room}", whep_post)
    app.router.add_patch("/whip/{room}/{session}", whip_patch)
    app.router.add_patch("/whep/{room}/{session}", whep_patch)
    app.router.add_delete("/whip/{room}/{session}", whip_delete)
    app.router.add_delete("/whep/{room}/{session}", whep_delete)
    for path in ("/whip/{room}", "/whep/{room}", "/whip/{room}/{session}",
                 "/whep/{room}/{session}"):
        app.router.add_route("OPTIONS", path, options)
