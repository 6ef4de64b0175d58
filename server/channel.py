"""The room channel: one WebSocket per page, `GET /ws/{room}?token=…`.

A classroom page (a token that may watch the room) sends
  {"type": "hand"}                         raise its hand
  {"type": "ask", "text": "…"}             a question (at most MAX_TEXT_CHARS characters)
  {"type": "stats", "session": "<WHEP session id>", "fps": …, "kbps": …, "lost": …,
   "freezes": …}                           what its player measures (shown to the teacher)
and receives {"type": "hello", "role": "classroom", "questions": []}, then "asked" and
"answered" events for the questions it sent, and {"type": "live"} when the room's lesson
starts (a page waiting for it joins at once).

A teacher page (a token that may publish to the room) sends {"type": "answer", "id": N} and
receives {"type": "hello", "role": "teacher", "questions": [...], "classrooms": [...]}, every
question event, and {"type": "classrooms", "classrooms": [...]} every few seconds.

A message the server cannot take gets {"type": "error", "error": code, "message": text}; the
socket stays open. A page that does not read its messages (more than OUTBOX events pending) is
disconnected rather than buffered without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from server.classrooms import PageReport
from server.errors import BadRequest, ClassCastError
from server.http import claims
from server.keys import CHANNELS_KEY, CLASSROOMS_KEY, QUESTIONS_KEY
from server.questions import Question
from server.sockets import OpenSocket, RoomSockets
from server.whip import room_name

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 4096
OUTBOX = 256
CLASSROOMS_EVERY_S = 2.0
HEARTBEAT_S = 15.0


async def socket(request: web.Request) -> web.WebSocketResponse:
    room = room_name(request)
    who = claims(request)
    who.require_watch(room)
    teacher = who.may_publish(room)
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S, max_msg_size=MAX_MESSAGE_BYTES)
    await ws.prepare(request)
    board = request.app[QUESTIONS_KEY].room(room)
    monitor = request.app[CLASSROOMS_KEY]
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue(OUTBOX)
    mine: set[int] = set()  # a classroom hears only of the questions it sent

    def push(message: dict[str, Any]) -> None:
        try:
            outbox.put_nowait(message)
        except asyncio.QueueFull:
            logger.warning("room %s: a %s page is not reading its messages; disconnecting",
                           room, "teacher" if teacher else "classroom")
            writer.cancel()

    def listener(event: str, question: Question) -> None:
        if teacher or question.id in mine:
            push({"type": event, "question": question.to_json()})

    def classrooms() -> list[dict[str, object]]:
        return [c.to_json() for c in monitor.classrooms(room)]

    async def write() -> None:
        try:
            while True:
                try:
                    message = await asyncio.wait_for(outbox.get(), CLASSROOMS_EVERY_S)
                except TimeoutError:
                    if not teacher:
                        continue
                    message = {"type": "classrooms", "classrooms": classrooms()}
                await ws.send_json(message)
        finally:
            # Ended (the page left, or it stopped reading and was cut off): closing the socket
            # ends the handler's read loop too.
            if not ws.closed:
                await ws.close(code=WSCloseCode.TRY_AGAIN_LATER)

    hello: dict[str, Any] = {"type": "hello", "role": "teacher" if teacher else "classroom",
                             "questions": [q.to_json() for q in board.questions] if teacher
                             else []}
    if teacher:
        hello["classrooms"] = classrooms()
    await ws.send_json(hello)
    board.listeners.append(listener)
    writer = asyncio.create_task(write(), name=f"ws-writer-{room}")
    registered = OpenSocket(room, teacher, ws, push)
    request.app[CHANNELS_KEY].add(registered)
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                handle(request, room, who.subject, teacher, msg.data, mine)
            except ClassCastError as exc:
                push({"type": "error", "error": exc.code, "message": exc.message})
    finally:
        request.app[CHANNELS_KEY].remove(registered)
        board.listeners.remove(listener)
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        with contextlib.suppress(Exception):
            await ws.close()
    return ws


def handle(request: web.Request, room: str, subject: str, teacher: bool, data: str,
           mine: set[int]) -> None:
    try:
        message = json.loads(data)
    except ValueError as exc:
        raise BadRequest("a message must be a JSON object like {\"type\": \"hand\"}") from exc
    if not isinstance(message, dict):
        raise BadRequest("a message must be a JSON object like {\"type\": \"hand\"}")
    kind = message.get("type")
    board = request.app[QUESTIONS_KEY].room(room)
    if teacher and kind == "answer":
        question_id = message.get("id")
        if not isinstance(question_id, int):
            raise BadRequest('"answer" needs the question\'s "id" (a number)')
        board.answer(question_id)
    elif not teacher and kind in ("hand", "ask"):
        text = message.get("text", "") if kind == "ask" else ""
        if not isinstance(text, str):
            raise BadRequest('"text" must be a string')
        if kind == "ask" and not text.strip():
            raise BadRequest("the question is empty; to raise the hand send {\"type\": \"hand\"}")
        mine.add(board.next_id)
        try:
            board.ask(subject, text)
        except ClassCastError:
            mine.discard(board.next_id)
            raise
    elif not teacher and kind == "stats":
        session = message.get("session")
        numbers = [message.get(k, 0) for k in ("fps", "kbps", "lost", "freezes")]
        if not isinstance(session, str) or not all(
                isinstance(n, int | float) and not isinstance(n, bool) and 0 <= n < 1e9
                for n in numbers):
            raise BadRequest('"stats" needs "session" and non-negative numbers "fps", '
                             '"kbps", "lost", "freezes"')
        fps, kbps, lost, freezes = numbers
        request.app[CLASSROOMS_KEY].report(
            room, session, PageReport(float(fps), float(kbps), int(lost), int(freezes),
                                      time.monotonic()))
    else:
        who, allowed = ("teacher", '"answer"') if teacher else ("classroom",
                                                                 '"hand", "ask" or "stats"')
        raise BadRequest(f"unknown message type {kind!r} for a {who} page; send {allowed}")


async def close_all(app: web.Application) -> None:
    await app[CHANNELS_KEY].close_all()


def add_routes(app: web.Application) -> None:
    """The route, the open-socket registry (the app adds it to the relay's room listeners),
    and closing every socket at shutdown."""
    app[CHANNELS_KEY] = RoomSockets()
    app.on_shutdown.append(close_all)
    app.router.add_get("/ws/{room}", socket)
