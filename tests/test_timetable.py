"""The timetable through its API: scheduling, weekly repetition, and the bad input it refuses
(overlaps in one room, end before start, unknown rooms, teachers and classrooms)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from aiohttp.test_utils import TestClient

from recorder.manifest import LessonInfo
from server.keys import ATTENDANCE_KEY, RECORDINGS_KEY
from tests.conftest import Peers
from tests.schools import Admin, seed

WEEK = 7 * 86400


@pytest.fixture
def admin(client: TestClient, token: Callable[..., str]) -> Admin:
    return Admin(client, token("admin"))


async def test_schedule_list_and_delete(admin: Admin, token: Callable[..., str]) -> None:
    s = await seed(admin)
    lesson = await admin.post("/api/timetable", {
        "room": s.room, "teacher": s.teacher, "subject": "数学", "grade": "5",
        "title": "分数的意义", "start": "2026-09-07T08:00", "end": "2026-09-07T08:40",
        "weeks": 16})
    assert lesson["targets"] == sorted([s.classrooms[k] for k in "ABC"])  # the pairings
    assert lesson["start"] == "2026-09-07T08:00+08:00"  # the schools' time zone
    assert lesson["ends_at"] - lesson["starts_at"] == 40 * 60
    only_a = await admin.post("/api/timetable", {
        "room": s.room, "title": "复习", "start": "2026-09-07T09:00+08:00",
        "end": "2026-09-07T09:40+08:00", "targets": [s.classrooms["A"]]})
    assert only_a["targets"] == [s.classrooms["A"]] and only_a["weeks"] == 1
    # any token may read the timetable
    teacher = Admin(admin.client, token("teacher", s.room))
    listed = await teacher.call("GET", f"/api/timetable?room={s.room}&from=2026-12-01&to="
                                       "2026-12-31")
    assert [x["id"] for x in listed["lessons"]] == [lesson["id"]]  # only the weekly one
    detail = await teacher.call("GET", f"/api/timetable/{lesson['id']}")
    assert detail["title"] == "分数的意义" and detail["runs"] == []
    err = await admin.call("DELETE", f"/api/registry/rooms/{s.room}", expect=409)
    assert "still used" in err["message"]
    await admin.call("DELETE", f"/api/timetable/{only_a['id']}", expect=204)
    await admin.call("GET", f"/api/timetable/{only_a['id']}", expect=404)
    await teacher.call("DELETE", f"/api/timetable/{lesson['id']}", expect=403)


async def test_bad_lessons_are_refused_clearly(admin: Admin) -> None:
    s = await seed(admin)
    base = {"room": s.room, "title": "分数", "start": "2026-09-07T08:00",
            "end": "2026-09-07T08:40", "weeks": 4}
    first = await admin.post("/api/timetable", base)

    async def refused(status: int, code: str, text: str, **change: object) -> None:
        err = await admin.post("/api/timetable", {**base, **change}, expect=status)
        assert err["error"] == code and text in err["message"], err

    await refused(409, "conflict", "already has lesson", start="2026-09-07T08:30",
                  end="2026-09-07T09:10", weeks=1)
    # a weekly lesson clashes in its third week
    await refused(409, "conflict", "2026-09-21T08:00", start="2026-09-21T08:20",
                  end="2026-09-21T08:30", weeks=1)
    await refused(400, "bad_request", "ends before it starts", start="2026-09-07T10:00",
                  end="2026-09-07T09:00")
    await refused(400, "bad_request", "ends before it starts", start="2026-09-07T10:00",
                  end="2026-09-07T10:00")
    await refused(400, "bad_request", '"weeks"', start="2026-09-08T08:00",
                  end="2026-09-08T08:40", weeks=0)
    await refused(400, "bad_request", '"start" must be a time', start="next monday")
    await refused(422, "unprocessable", "no room 'nowhere'", room="nowhere")
    await refused(422, "unprocessable", "no teacher 999", teacher=999,
                  start="2026-09-08T08:00", end="2026-09-08T08:40")
    await refused(422, "unprocessable", "not paired", targets=[s.classrooms["S"]],
                  start="2026-09-08T08:00", end="2026-09-08T08:40")
    await refused(400, "bad_request", "not colour", colour="red")
    err = await admin.call("POST", "/api/timetable", 400, data=b"{",
                           headers={"Content-Type": "application/json"})
    assert err["error"] == "bad_request"
    # right after the weekly lesson ends, and in another week's gap, are free
    await admin.post("/api/timetable", {**base, "start": "2026-09-07T08:40",
                                        "end": "2026-09-07T09:20", "weeks": 1})
    listed = await admin.call("GET", "/api/timetable")
    assert len(listed["lessons"]) == 2 and listed["lessons"][0]["id"] == first["id"]


async def test_the_schedule_names_the_lesson_being_recorded(admin: Admin,
                                                           client: TestClient) -> None:
    s = await seed(admin)
    now = time.time()
    await admin.post("/api/timetable", {
        "room": s.room, "teacher": s.teacher, "subject": "数学", "grade": "5",
        "title": "分数的意义", "start": now + 600, "end": now + 3000})
    attendance = client.app[ATTENDANCE_KEY]
    assert attendance.lesson_for(s.room) == LessonInfo(  # 10 minutes early still counts
        school="乐山市第一小学", teacher="王老师", subject="数学", grade="5", title="分数的意义",
        county="市中区")
    assert attendance.lesson_for("elsewhere") is None


async def test_a_recording_started_by_hand_takes_what_the_teacher_left_empty_from_the_schedule(
        admin: Admin, client: TestClient, peers: Peers) -> None:
    s = await seed(admin)
    now = time.time()
    await admin.post("/api/timetable", {
        "room": s.room, "teacher": s.teacher, "subject": "数学", "grade": "5",
        "title": "分数的意义", "start": now - 60, "end": now + 2400})
    await peers.publish(s.room)
    resp = await client.post(f"/api/rooms/{s.room}/recording", json={
        "action": "start", "title": "分数的意义（复习）"}, headers=admin.headers)
    assert resp.status == 200, await resp.text()
    recording = await client.app[RECORDINGS_KEY].start(s.room)  # the running one
    assert recording.lesson == LessonInfo(
        school="乐山市第一小学", teacher="admin", subject="数学", grade="5",
        title="分数的意义（复习）", county="市中区")
    await client.app[RECORDINGS_KEY].stop(s.room)
