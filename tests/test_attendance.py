"""A scheduled lesson end to end: a teacher publishes over WHIP, two of its three target
classrooms join through real aiortc peers (one of them reconnects), one never comes. Attendance,
coverage and the Prometheus metrics (scraped and parsed) must agree; the schedule names the
recording and the catalog entry."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from server.app import create_app
from server.keys import ISSUER_KEY
from server.settings import SchoolsSettings, Settings
from server.tokens import Role, classroom_subject
from tests.conftest import Peers
from tests.schools import Admin, Seeded, seed

T = TypeVar("T")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def poll(fetch: Callable[[], Awaitable[T]], ok: Callable[[T], bool], what: str,
               timeout: float = 20.0) -> T:
    """Fetch observable state until it satisfies `ok` (a bounded wait, not a sleep)."""
    import asyncio

    deadline = time.monotonic() + timeout
    while True:
        value = await fetch()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {value}")
        await asyncio.sleep(0.1)


async def scrape(client: TestClient) -> Samples:
    text = await (await client.get("/metrics")).text()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def county(name: str) -> tuple[tuple[str, str], ...]:
    return (("county", name),)


@dataclass
class Scene:
    """A running service with the seeded registry, an admin and a teacher's peers."""

    client: TestClient
    admin_token: str
    admin: Admin
    seeded: Seeded
    teacher: Peers

    def device(self, classroom: int) -> Peers:
        """Peers holding a registered classroom's device token."""
        issuer = self.client.app[ISSUER_KEY]
        return Peers(self.client, lambda role, room=None: issuer.mint(
            Role.CLASSROOM, None, 3600, classroom_subject(classroom)))


async def scene(aiohttp_client: Callable[..., Awaitable[TestClient]],
                settings: Settings) -> Scene:
    client = await aiohttp_client(create_app(settings))
    issuer = client.app[ISSUER_KEY]
    token = issuer.mint(Role.ADMIN)
    admin = Admin(client, token)
    return Scene(client, token, admin, await seed(admin),
                 Peers(client, lambda role, room=None: issuer.mint(Role(role), room)))


async def test_scheduled_lesson_attendance_coverage_and_metrics(
        aiohttp_client: Callable[..., Awaitable[TestClient]], settings: Settings) -> None:
    settings = dataclasses.replace(
        settings,
        schools=SchoolsSettings(coverage_share=0.2, end_grace_s=1.0, sample_interval_s=0.2,
                                late_after_s=60.0),
        recorder=dataclasses.replace(settings.recorder, auto_start=True, grace_s=0.5))
    sc = await scene(aiohttp_client, settings)
    client, admin, s, teacher_peers = sc.client, sc.admin, sc.seeded, sc.teacher
    issuer = client.app[ISSUER_KEY]
    ids = s.classrooms

    # a second showcase room whose lesson started ten minutes ago and never went live
    other = (await admin.post("/api/registry/classrooms", {
        "name": "五年级二班", "school": s.schools["乐山市第一小学"]}))["id"]
    await admin.post("/api/registry/rooms", {"name": "science-5b", "classroom": other})
    now = time.time()
    await admin.post("/api/timetable", {"room": "science-5b", "title": "光的折射",
                                        "start": now - 600, "end": now + 600})
    lesson = await admin.post("/api/timetable", {
        "room": s.room, "teacher": s.teacher, "subject": "数学", "grade": "5",
        "title": "分数的意义", "start": now - 2, "end": now + 8})
    duration = lesson["ends_at"] - lesson["starts_at"]
    needed = 0.2 * duration

    a, b, anonymous = sc.device(ids["A"]), sc.device(ids["B"]), Peers(
        client, lambda role, room=None: issuer.mint(Role.CLASSROOM, room))
    try:
        teacher, _ = await teacher_peers.publish(s.room)
        _, a_counters = await a.subscribe(s.room)
        b_first, _ = await b.subscribe(s.room)
        await anonymous.subscribe(s.room)  # a screen with no registered classroom: not counted
        await a_counters["video"].wait_for(10)

        detail = await admin.call("GET", f"/api/timetable/{lesson['id']}")
        run_id = detail["runs"][0]["id"]
        assert run_id == f"{lesson['id']}-{time.strftime('%Y%m%d', time.gmtime(now + 8 * 3600))}"

        async def attendance() -> dict[str, Any]:
            result: dict[str, Any] = await admin.call("GET", f"/api/lessons/{run_id}/attendance")
            return result

        def row(report: dict[str, Any], key: str) -> dict[str, Any]:
            return next(c for c in report["classrooms"] if c["classroom"] == ids[key])

        live = await scrape(client)
        assert live[("classcast_schools_classrooms_connected",
                     (("county", "犍为县"), ("school", "犍为县罗城小学")))] == 1
        assert live[("classcast_schools_classrooms_connected",
                     (("county", "沐川县"), ("school", "沐川县永福小学")))] == 1
        assert live[("classcast_schools_lessons_live", county("市中区"))] == 1
        assert live[("classcast_schools_lessons_late", county("市中区"))] == 1
        assert ("classcast_schools_lessons_without_teacher", county("市中区")) not in live

        # B drops and comes back: one reconnect
        await b_first.close()
        await poll(attendance, lambda r: row(r, "B")["left_at"] is not None, "B left")
        await b.subscribe(s.room)
        report = await poll(
            attendance, lambda r: all(row(r, k)["seconds_watched"] >= needed + 0.5
                                      and row(r, k)["quality_samples"] >= 3 for k in "AB"),
            "A and B watched enough")
        assert report["status"] == "live" and report["coverage"]["targets"] == 3

        await teacher.close()
        gone = await poll(lambda: scrape(client), lambda m: m.get(
            ("classcast_schools_lessons_without_teacher", county("市中区"))) == 1,
            "the teacher missing from a scheduled lesson")
        assert ("classcast_schools_lessons_live", county("市中区")) not in gone
        report = await poll(attendance, lambda r: r["status"] == "ended", "lesson ended",
                            timeout=30)
    finally:
        for p in (a, b, anonymous, teacher_peers):
            await p.close()

    assert report["coverage"] == {"ratio": 0.6667, "reached": 2, "targets": 3,
                                  "share_required": 0.2,
                                  "minutes_required": round(needed / 60, 2)}
    assert [c["classroom"] for c in report["classrooms"]] == sorted(ids[k] for k in "ABC")
    ra, rb, rc = row(report, "A"), row(report, "B"), row(report, "C")
    assert ra["reached"] and rb["reached"] and not rc["reached"]
    assert (ra["reconnects"], rb["reconnects"]) == (0, 1)
    assert ra["school"] == "犍为县罗城小学" and rb["county"] == "沐川县"
    for r in (ra, rb):
        assert lesson["starts_at"] <= r["joined_at"] <= r["left_at"] <= report["ended_at"]
        assert 0 < r["join_latency_s"] < 10
        assert r["loss"] is not None and 0 <= r["loss"] <= 1
        assert r["freeze_s"] < 1.0  # loopback: reports keep coming, nothing lost
    assert any(r["rtt_ms"] is not None and r["rtt_ms"] > 0 for r in (ra, rb))
    assert (rc["joined_at"], rc["minutes_watched"], rc["reconnects"]) == (None, 0, 0)

    m = await scrape(client)
    assert m[("classcast_schools_coverage_ratio", county("犍为县"))] == 0.5
    assert m[("classcast_schools_coverage_ratio", county("沐川县"))] == 1.0
    assert m[("classcast_schools_lessons_finished_total", county("市中区"))] == 1
    for key, county_name in (("A", "犍为县"), ("B", "沐川县")):
        delivered = m[("classcast_schools_delivered_minutes_total", county(county_name))]
        assert abs(delivered - row(report, key)["seconds_watched"] / 60) < 1e-4
        assert m[("classcast_schools_loss_ratio_count", county(county_name))] >= 3
    assert m[("classcast_schools_join_latency_seconds_count", county("犍为县"))] == 1
    assert m[("classcast_schools_join_latency_seconds_count", county("沐川县"))] == 2
    assert sum(v for (name, _), v in m.items()
               if name == "classcast_schools_rtt_seconds_count") >= 1
    assert ("classcast_schools_classrooms_connected",
            (("county", "犍为县"), ("school", "犍为县罗城小学"))) not in m
    assert m[("classcast_schools_lessons_late", county("市中区"))] == 1

    # the recording was named by the schedule, is linked to the run, and reaches the catalog
    recording = report["recording"]
    assert recording
    by_recording = await admin.call("GET", f"/api/lessons/{recording}/attendance")
    assert by_recording["id"] == run_id and by_recording["coverage"]["reached"] == 2
    entry = await poll(lambda: client.get(f"/api/lessons/{recording}",
                                          headers=admin.headers),
                       lambda resp: resp.status == 200, "the recording in the catalog",
                       timeout=60)
    catalog = (await entry.json())["lesson"]
    assert (catalog["title"], catalog["teacher"], catalog["subject"], catalog["school"],
            catalog["county"]) == ("分数的意义", "王老师", "数学", "乐山市第一小学", "市中区")

    # who may see it, and what is not there
    teacher_token = issuer.mint(Role.TEACHER, s.room)
    resp = await client.get(f"/api/lessons/{run_id}/attendance",
                            headers={"Authorization": f"Bearer {teacher_token}"})
    assert resp.status == 200
    resp = await client.get(f"/api/lessons/{run_id}/attendance", headers={
        "Authorization": f"Bearer {issuer.mint(Role.CLASSROOM, s.room)}"})
    assert resp.status == 403
    resp = await client.get("/api/lessons/nope-20260101/attendance", headers=admin.headers)
    assert resp.status == 404 and (await resp.json())["error"] == "not_found"


async def test_a_restart_mid_lesson_keeps_what_was_counted(
        aiohttp_client: Callable[..., Awaitable[TestClient]], settings: Settings) -> None:
    settings = dataclasses.replace(settings, schools=SchoolsSettings(
        coverage_share=0.05, end_grace_s=1.0, sample_interval_s=0.2))
    sc = await scene(aiohttp_client, settings)
    first, admin, admin_token, s, teacher_peers = (sc.client, sc.admin, sc.admin_token,
                                                   sc.seeded, sc.teacher)
    now = time.time()
    lesson = await admin.post("/api/timetable", {"room": s.room, "title": "分数的意义",
                                                 "start": now - 2, "end": now + 30})
    a = sc.device(s.classrooms["A"])
    try:
        await teacher_peers.publish(s.room)
        await a.subscribe(s.room)
        run_id = (await admin.call("GET", f"/api/timetable/{lesson['id']}"))["runs"][0]["id"]

        async def attendance(client: TestClient) -> dict[str, Any]:
            result: dict[str, Any] = await Admin(client, admin_token).call(
                "GET", f"/api/lessons/{run_id}/attendance")
            return result

        before = await poll(lambda: attendance(first),
                            lambda r: r["classrooms"][0]["seconds_watched"] >= 2.0,
                            "two seconds watched")
        await first.close()  # the service stops in the middle of the lesson
    finally:
        await a.close()
        await teacher_peers.close()

    second = await aiohttp_client(create_app(settings))
    resumed = await attendance(second)
    assert resumed["status"] == "live"
    watched = resumed["classrooms"][0]
    assert watched["seconds_watched"] >= before["classrooms"][0]["seconds_watched"]
    assert watched["left_at"] is not None and watched["joined_at"] is not None
    # the teacher does not come back: the lesson ends with what was counted
    ended = await poll(lambda: attendance(second), lambda r: r["status"] == "ended",
                       "the interrupted lesson ended")
    assert ended["classrooms"][0]["seconds_watched"] == watched["seconds_watched"]
    assert ended["coverage"]["reached"] == 1 and ended["coverage"]["targets"] == 3


async def test_a_classroom_that_stops_receiving_counts_as_frozen(
        aiohttp_client: Callable[..., Awaitable[TestClient]], settings: Settings) -> None:
    settings = dataclasses.replace(settings, schools=SchoolsSettings(sample_interval_s=0.2))
    sc = await scene(aiohttp_client, settings)
    admin, s, teacher_peers = sc.admin, sc.seeded, sc.teacher
    now = time.time()
    lesson = await admin.post("/api/timetable", {"room": s.room, "title": "分数的意义",
                                                 "start": now - 2, "end": now + 60})
    a = sc.device(s.classrooms["A"])
    try:
        await teacher_peers.publish(s.room)
        session, _ = await a.subscribe(s.room)
        run_id = (await admin.call("GET", f"/api/timetable/{lesson['id']}"))["runs"][0]["id"]

        async def classroom_a() -> dict[str, Any]:
            report = await admin.call("GET", f"/api/lessons/{run_id}/attendance")
            row: dict[str, Any] = report["classrooms"][0]
            return row

        healthy = await poll(classroom_a, lambda r: r["quality_samples"] >= 20,
                             "four seconds of samples")
        assert healthy["freeze_s"] < 0.5  # receiver reports keep coming, no loss
        # the screen stops receiving (as a hung player would) but its connection stays up
        for transceiver in session.pc.getTransceivers():
            await transceiver.receiver.stop()
        frozen = await poll(classroom_a, lambda r: r["freeze_s"] >= 1.0, "freeze counted")
        assert frozen["left_at"] is None  # still connected: frozen, not gone
    finally:
        await a.close()
        await teacher_peers.close()
