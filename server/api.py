"""JSON API for live rooms, plus health and Prometheus metrics."""

from __future__ import annotations

import dataclasses

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from server.http import METRICS_KEY, claims
from server.rooms import RoomInfo
from server.whip import RELAY_KEY


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
    return web.json_response(_room_json(request.app[RELAY_KEY].room_info(room)))


async def healthz(request: web.Request) -> web.Response:
    relay = request.app[RELAY_KEY]
    return web.json_response({"status": "ok", "rooms": len(relay.rooms),
                              "sessions": len(relay.sessions)})


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS_KEY].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/rooms", list_rooms)
    app.router.add_get("/api/rooms/{room}", get_room)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
