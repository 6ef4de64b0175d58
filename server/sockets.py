"""The room channel's open WebSockets, by room: who is connected to which room, telling
classroom pages the moment their lesson starts, and closing them all at shutdown.

It is a relay room listener (`Relay.listeners`): when a room goes live every classroom page of
that room gets `{"type": "live"}`, so a page that waits out a WHEP 409 + Retry-After joins at
once instead of at its next retry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import WSCloseCode, web

logger = logging.getLogger(__name__)

Push = Callable[[dict[str, Any]], None]


@dataclass(frozen=True, eq=False)
class OpenSocket:
    room: str
    teacher: bool
    ws: web.WebSocketResponse
    push: Push  # queue a message for the socket's writer (bounded; see server.channel)


class RoomSockets:
    def __init__(self) -> None:
        self._rooms: dict[str, set[OpenSocket]] = {}

    def add(self, socket: OpenSocket) -> None:
        self._rooms.setdefault(socket.room, set()).add(socket)

    def remove(self, socket: OpenSocket) -> None:
        sockets = self._rooms.get(socket.room)
        if sockets is not None:
            sockets.discard(socket)
            if not sockets:
                del self._rooms[socket.room]

    def count(self, room: str) -> int:
        return len(self._rooms.get(room, ()))

    # --- relay room listener ----------------------------------------------------------------
    def room_live(self, room: str) -> None:
        for socket in list(self._rooms.get(room, ())):
            if not socket.teacher:
                socket.push({"type": "live"})

    def room_not_live(self, room: str) -> None:
        pass

    async def close_all(self) -> None:
        """At shutdown: tell every page the server is going away (they reconnect by
        themselves), so no open handler holds the shutdown up."""
        for sockets in list(self._rooms.values()):
            for socket in list(sockets):
                await socket.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
