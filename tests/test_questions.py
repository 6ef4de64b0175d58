"""Raised hands and questions over the room channel (`GET /ws/{room}`), their bounds, the
classroom list the teacher sees, and questions kept in the recorded lesson's manifest."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import ClientWebSocketResponse, WSServerHandshakeError
from aiohttp.test_utils import TestClient

from server.app import create_app
from server.keys import RECORDINGS_KEY, STORE_KEY
from server.questions import (
    MAX_IDLE_ROOMS,
    MAX_QUESTIONS_PER_ROOM,
    MAX_TEXT_CHARS,
    QuestionBoard,
    TooManyQuestions,
)
from server.settings import Settings
from tests.conftest import Peers, eventually
from tests.test_recorder import finished_manifest, recorder_app, recording_settings


async def connect(client: TestClient, room: str, token: str) -> ClientWebSocketResponse:
    return await client.ws_connect(f"/ws/{room}", params={"token": token})


async def receive(ws: ClientWebSocketResponse, kind: str) -> dict[str, Any]:
    """The next message of type `kind` (others, like periodic classroom lists, skipped)."""
    while True:
        message = await asyncio.wait_for(ws.receive_json(), 10)
        if message["type"] == kind:
            return message


async def test_hand_and_question_reach_the_teacher_and_answered_reaches_the_classroom(
        client: TestClient, token: Callable[..., str]) -> None:
    room = "maths-ws"
    teacher = await connect(client, room, token("teacher", room))
    hello = await receive(teacher, "hello")
    assert hello["role"] == "teacher" and hello["questions"] == []
    north = await connect(client, room, token("classroom", room, subject="north-school"))
    south = await connect(client, room, token("classroom", room, subject="south-school"))
    for ws in (north, south):
        assert (await receive(ws, "hello"))["role"] == "classroom"

    await north.send_json({"type": "hand"})
    asked = (await receive(teacher, "asked"))["question"]
    assert asked["classroom"] == "north-school" and asked["text"] == ""
    assert not asked["answered"]
    assert (await receive(north, "asked"))["question"]["id"] == asked["id"]

    await south.send_json({"type": "ask", "text": "  为什么  分母不能是 0？ "})
    question = (await receive(teacher, "asked"))["question"]
    assert question["text"] == "为什么 分母不能是 0？" and question["classroom"] == "south-school"

    await teacher.send_json({"type": "answer", "id": question["id"]})
    answered = (await receive(south, "answered"))["question"]
    assert answered["id"] == question["id"] and answered["answered"]
    assert (await receive(teacher, "answered"))["question"]["answered"]

    # The north classroom heard only of its own hand; a teacher who joins late sees both.
    await north.send_json({"type": "ask", "text": "ping"})
    assert (await receive(north, "asked"))["question"]["text"] == "ping"
    late = await connect(client, room, token("teacher", room))
    texts = [q["text"] for q in (await receive(late, "hello"))["questions"]]
    assert texts == ["", "为什么 分母不能是 0？", "ping"]
    for ws in (teacher, north, south, late):
        await ws.close()


async def test_bad_messages_get_clear_errors_and_the_socket_stays_open(
        client: TestClient, token: Callable[..., str]) -> None:
    room = "bad-ws"
    classroom = await connect(client, room, token("classroom", room))
    await receive(classroom, "hello")
    for message, code in [("not json", "bad_request"), ('["a list"]', "bad_request"),
                          ('{"type": "answer", "id": 1}', "bad_request"),
                          ('{"type": "ask", "text": ""}', "bad_request"),
                          ('{"type": "ask", "text": 5}', "bad_request"),
                          ('{"type": "stats", "session": "x", "fps": -1}', "bad_request")]:
        await classroom.send_str(message)
        error = await receive(classroom, "error")
        assert error["error"] == code and error["message"], message
    await classroom.send_json({"type": "ask", "text": "x" * (MAX_TEXT_CHARS + 1)})
    error = await receive(classroom, "error")
    assert str(MAX_TEXT_CHARS) in error["message"]
    # three at once, then the rate limit answers 429-style
    for i in range(3):
        await classroom.send_json({"type": "ask", "text": f"q{i}"})
        await receive(classroom, "asked")
    await classroom.send_json({"type": "ask", "text": "one too many"})
    error = await receive(classroom, "error")
    assert error["error"] == "too_many_questions" and "wait" in error["message"]
    await classroom.close()

    teacher = await connect(client, room, token("teacher", room))
    await receive(teacher, "hello")
    await teacher.send_json({"type": "answer", "id": 999})
    assert (await receive(teacher, "error"))["error"] == "not_found"
    await teacher.send_json({"type": "hand"})
    assert (await receive(teacher, "error"))["error"] == "bad_request"
    await teacher.close()


@pytest.mark.parametrize("who", ["none", "expired", "other-room"])
async def test_the_channel_refuses_bad_tokens_before_upgrading(
        client: TestClient, token: Callable[..., str], who: str) -> None:
    params = {"none": {}, "expired": {"token": token("classroom", "r1", ttl_s=-10)},
              "other-room": {"token": token("classroom", "r2")}}[who]
    with pytest.raises(WSServerHandshakeError) as caught:
        await client.ws_connect("/ws/r1", params=params)
    assert caught.value.status == (403 if who == "other-room" else 401)
    response = await client.get("/ws/r1", params=params)
    body = await response.json()
    assert body["error"] in ("unauthorized", "forbidden") and body["message"]


def test_the_board_is_bounded() -> None:
    now = [0.0]
    board = QuestionBoard(clock=lambda: now[0])
    room = board.room("r")
    for i in range(MAX_QUESTIONS_PER_ROOM + 10):
        now[0] += 10.0  # one token refills every 10 s
        room.ask(f"c{i % 3}", f"q{i}")
    assert len(room.questions) == MAX_QUESTIONS_PER_ROOM
    assert room.questions[0].text == "q10"  # the oldest went first
    for _ in range(3):
        room.ask("burst", "x")
    with pytest.raises(TooManyQuestions) as caught:
        room.ask("burst", "x")
    assert caught.value.headers["Retry-After"] == "10"
    now[0] += 10.0
    room.ask("burst", "after the refill")
    for i in range(600):  # idle rooms are forgotten beyond a bound; the oldest first
        board.room(f"idle-{i}")
    assert len(board) == MAX_IDLE_ROOMS
    assert board.take("r", 0.0) == ()  # "r" was the oldest idle room: forgotten


async def test_teacher_sees_the_classrooms_with_their_link_quality(
        client: TestClient, token: Callable[..., str], peers: Peers) -> None:
    room = "list-ws"
    await peers.publish(room)
    await peers.subscribe(room)
    await peers.subscribe(room)
    teacher = await connect(client, room, token("teacher", room))
    await receive(teacher, "hello")

    def with_rtt(message: dict[str, Any]) -> bool:
        rooms = message["classrooms"]
        return len(rooms) == 2 and all(c["link"] and c["link"]["rtt_ms"] is not None
                                       and c["link"]["kbps"] for c in rooms)

    message = await receive(teacher, "classrooms")
    while not with_rtt(message):
        message = await receive(teacher, "classrooms")
    assert {c["state"] for c in message["classrooms"]} == {"connected"}

    # The same list in the room API (a teacher's or admin's token sees it).
    response = await client.get(f"/api/rooms/{room}",
                                headers={"Authorization": f"Bearer {token('teacher', room)}"})
    info = await response.json()
    assert info["subscriber_count"] == 2 and len(info["classrooms"]) == 2

    # A classroom page's own numbers join its line, by its WHEP session id.
    session_id = message["classrooms"][0]["session"]
    classroom = await connect(client, room, token("classroom", room))
    await receive(classroom, "hello")
    await classroom.send_json({"type": "stats", "session": session_id, "fps": 19.5,
                               "kbps": 800, "lost": 2, "freezes": 1})
    message = await receive(teacher, "classrooms")
    while not any(c["page"] for c in message["classrooms"]):
        message = await receive(teacher, "classrooms")
    (page,) = [c["page"] for c in message["classrooms"] if c["page"]]
    assert page == {"fps": 19.5, "kbps": 800.0, "lost": 2, "freezes": 1}
    await classroom.close()
    await teacher.close()


async def test_questions_are_kept_in_the_recorded_lesson(
        aiohttp_client: Callable[..., Awaitable[TestClient]], settings: Settings) -> None:
    client, peers = await recorder_app(aiohttp_client, recording_settings(settings))
    room = "history-ws"
    service = client.app[RECORDINGS_KEY]
    try:
        await peers.publish(room)
        await eventually(lambda: service.status(room)[0] is not None, what="recording")
        classroom = await connect(client, room, peers.token("classroom", room, subject="east"))
        teacher = await connect(client, room, peers.token("teacher", room))
        await receive(classroom, "hello")
        await receive(teacher, "hello")
        await classroom.send_json({"type": "ask", "text": "秦朝是哪一年统一的？"})
        question = (await receive(teacher, "asked"))["question"]
        await teacher.send_json({"type": "answer", "id": question["id"]})
        await receive(classroom, "answered")
        await classroom.send_json({"type": "hand"})
        await receive(teacher, "asked")
        await service.stop(room)
        await service.recorder.wait_finished()
        manifest = await finished_manifest(client.app[STORE_KEY])
        assert [(q.classroom, q.text, q.answered_at is not None) for q in manifest.questions] \
            == [("east", "秦朝是哪一年统一的？", True), ("east", "", False)]

        # The catalog's lesson detail shows them.
        admin = peers.token("admin")
        lessons = await client.get("/api/lessons", headers={"Authorization": f"Bearer {admin}"})
        (lesson,) = (await lessons.json())["lessons"]
        detail = await (await client.get(f"/api/lessons/{lesson['id']}",
                                         headers={"Authorization": f"Bearer {admin}"})).json()
        assert [(q["classroom"], q["text"], q["answered"]) for q in detail["questions"]] == \
            [("east", "秦朝是哪一年统一的？", True), ("east", "", False)]
        await classroom.close()
        await teacher.close()
    finally:
        await peers.close()


async def test_questions_are_kept_when_the_server_shuts_down_mid_lesson(
        aiohttp_client: Callable[..., Awaitable[TestClient]], settings: Settings) -> None:
    client, peers = await recorder_app(aiohttp_client, recording_settings(settings))
    room = "shutdown-ws"
    service = client.app[RECORDINGS_KEY]
    try:
        await peers.publish(room)
        await eventually(lambda: service.status(room)[0] is not None, what="recording")
        classroom = await connect(client, room, peers.token("classroom", room, subject="west"))
        await receive(classroom, "hello")
        await classroom.send_json({"type": "ask", "text": "还有作业吗？"})
        await receive(classroom, "asked")
        recording = service._rooms[room].recording
        await eventually(lambda: recording._streams["video"].frames > 60, what="some video")
    finally:
        await peers.close()
    await client.close()  # shutdown mid-lesson: archived as interrupted, questions and all

    again = await aiohttp_client(create_app(settings))
    manifest = await finished_manifest(again.app[STORE_KEY])
    assert manifest.status == "interrupted"
    assert [(q.classroom, q.text) for q in manifest.questions] == [("west", "还有作业吗？")]


async def test_classroom_pages_hear_when_their_lesson_starts(
        client: TestClient, token: Callable[..., str], peers: Peers) -> None:
    room = "live-ws"
    classroom = await connect(client, room, token("classroom", room))
    other = await connect(client, "other-room", token("classroom", "other-room"))
    teacher = await connect(client, room, token("teacher", room))
    for ws in (classroom, other, teacher):
        await receive(ws, "hello")
    await peers.publish(room)
    assert (await receive(classroom, "live")) == {"type": "live"}
    # only that room's classrooms: the other room's page hears nothing
    await other.send_json({"type": "hand"})
    assert (await asyncio.wait_for(other.receive_json(), 10))["type"] == "asked"
    for ws in (classroom, other, teacher):
        await ws.close()
