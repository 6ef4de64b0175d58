"""The catalog on a real SQLite file and a real S3 server: search in Chinese and English,
filters, paging, facets, reindex, edits, deletion, playback, and every bad input."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient

from catalog.index import Query
from catalog.text import index_terms, match_query
from recorder.manifest import LessonInfo, Manifest
from server.keys import CATALOG_KEY, RECORDINGS_KEY, STORE_KEY
from server.settings import Settings
from server.storage import S3Store
from tests.conftest import eventually
from tests.test_recorder import recorder_app, recording_settings

SCHOOLS = [("乐山市第一小学", "市中区"), ("成都七中", "锦江区"), ("峨眉山市实验小学", "峨眉山市")]
LESSONS = [
    ("数学", "5", "分数的意义", "Fractions, part one"),
    ("数学", "5", "分数的加减法", "Adding fractions"),
    ("数学", "6", "圆的面积", "Area of a circle"),
    ("语文", "5", "古诗三首", "Three classical poems"),
    ("英语", "4", "My family 我的家庭", "English: family words"),
    ("科学", "6", "水的三态", "States of water"),
]


def manifest(i: int) -> Manifest:
    subject, grade, title, description = LESSONS[i % len(LESSONS)]
    school, county = SCHOOLS[i % len(SCHOOLS)]
    lesson_id = f"2026090{1 + i // 10}-0{i % 10}0000-{i:08x}"
    return Manifest(
        id=lesson_id, room=f"room-{i % 4}",
        lesson=LessonInfo(school=school, teacher=f"teacher-{i % 5}", subject=subject,
                          grade=grade, title=title),
        started_at=1_788_000_000 + i * 3600, ended_at=1_788_000_000 + i * 3600 + 2400,
        duration_s=2400.0 - i, segments=1200, codecs={"video": "H264", "audio": "opus"},
        bytes=400_000_000 + i, status="interrupted" if i % 7 == 6 else "complete",
        playlist=f"lessons/{lesson_id}/index.m3u8", thumbnail=None,
        extra={"county": county, "description": description, "tags": [subject, f"{grade}年级"]})


async def seed(store: S3Store, count: int) -> list[Manifest]:
    manifests = [manifest(i) for i in range(count)]
    for m in manifests:
        await store.put_bytes(f"lessons/{m.id}/manifest.json", m.to_json(), "application/json")
        await store.put_bytes(m.playlist, b"#EXTM3U\n#EXT-X-ENDLIST\n", "application/x-mpegurl")
    return manifests


async def api(client: TestClient, token: str, path: str, **params: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    resp = await client.get(path, params=params, headers={"Authorization": f"Bearer {token}"})
    return resp.status, await resp.json()


def test_chinese_and_english_terms() -> None:
    terms = index_terms("五年级数学：分数的意义 Fractions")
    assert "分数" in terms.bigrams.split() and "数" in terms.unigrams.split()
    assert terms.words == "fractions"
    assert match_query("分数") == '{title_bigrams bigrams} : "分数"'
    assert match_query('"分数" OR *)(^') == ('{title_bigrams bigrams} : "分数" AND '
                                           '{title_words words} : "or" *')
    assert match_query("分数的 x", title_only=True) == ('title_bigrams : "分数 数的" AND '
                                                     'title_words : "x" *')
    assert match_query("***") is None


async def test_search_filters_paging_and_facets(client: TestClient,
                                                token: Callable[..., str]) -> None:
    catalog = client.app[CATALOG_KEY]
    manifests = await seed(client.app[STORE_KEY], 30)
    report = await catalog.reindex()
    assert report.indexed == 30 and not report.skipped
    viewer = token("viewer")
    status, body = await api(client, viewer, "/api/lessons", q="分数")
    assert status == 200 and body["total"] == 10
    assert all("分数" in lesson["title"] for lesson in body["lessons"])
    _, body = await api(client, viewer, "/api/lessons", q="乐山")
    assert body["total"] == 10 and {x["school"] for x in body["lessons"]} == {"乐山市第一小学"}
    _, body = await api(client, viewer, "/api/lessons", q="fraction")  # English, by prefix
    assert body["total"] == 10
    _, body = await api(client, viewer, "/api/lessons", q="分数 加减")  # every term must match
    assert body["total"] == 5
    _, body = await api(client, viewer, "/api/lessons", subject="数学", grade="5",
                        school="乐山市第一小学")
    assert body["total"] > 0
    assert all((x["subject"], x["grade"], x["school"]) == ("数学", "5", "乐山市第一小学")
               for x in body["lessons"])
    # a facet counts without its own filter: the other subjects stay on offer
    assert body["facets"]["subject"]["数学"] == body["total"]
    assert set(body["facets"]["subject"]) > {"数学"}
    assert body["facets"]["grade"] == {"5": body["total"]}
    _, body = await api(client, viewer, "/api/lessons", q="数学")
    assert sum(body["facets"]["grade"].values()) == body["total"] == 15
    assert body["facets"]["subject"] == {"数学": 15}
    # paging: newest first, no overlaps, totals stable
    seen: list[str] = []
    for offset in (0, 7, 14, 21, 28):
        _, body = await api(client, viewer, "/api/lessons", limit="7", offset=str(offset))
        assert body["total"] == 30
        seen += [x["id"] for x in body["lessons"]]
    assert len(seen) == len(set(seen)) == 30
    _, body = await api(client, viewer, "/api/lessons", **{"from": "2026-08-30",
                                                           "to": "2026-08-30"})
    day = datetime(2026, 8, 30, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()  # schools' days
    expected = [m for m in manifests if day <= m.started_at < day + 86400]
    assert expected and body["total"] == len(expected)
    assert all(day <= x["started_at"] < day + 86400 for x in body["lessons"])
    _, body = await api(client, viewer, "/api/lessons", status="interrupted")
    assert body["total"] == 4
    _, body = await api(client, viewer, "/api/lessons", limit="100000")
    assert body["limit"] == 100 and len(body["lessons"]) == 30


async def test_bad_queries_are_400_naming_the_parameter(client: TestClient,
                                                        token: Callable[..., str]) -> None:
    await seed(client.app[STORE_KEY], 5)
    await client.app[CATALOG_KEY].reindex()
    viewer = token("viewer")
    for params, name in [({"limit": "ten"}, "limit"), ({"offset": "-1"}, "offset"),
                         ({"from": "yesterday"}, "from"), ({"status": "great"}, "status"),
                         ({"sort": "random"}, "sort"), ({"colour": "red"}, "colour"),
                         ({"q": "x" * 201}, "q")]:
        status, body = await api(client, viewer, "/api/lessons", **params)
        assert status == 400 and body["message"].startswith(name), body
    for q in ['"', "*", "分数 OR", "NEAR(a b)", "title:x", "'; DROP TABLE lessons;--", "^^"]:
        status, body = await api(client, viewer, "/api/lessons", q=q)
        assert status == 200, (q, body)
    status, body = await api(client, viewer, "/api/lessons/no-such-lesson")
    assert status == 404 and body["error"] == "not_found"
    status, _ = await api(client, "", "/api/lessons")
    assert status == 401


async def test_reindex_equals_the_live_index_and_skips_corrupt_manifests(
        client: TestClient) -> None:
    catalog, store = client.app[CATALOG_KEY], client.app[STORE_KEY]
    manifests = await seed(store, 12)
    for m in manifests:  # live: one recorder event per finished lesson
        await catalog.add_manifest(m.to_json())
    live = await catalog.search(Query(limit=100))
    await store.put_bytes("lessons/broken/manifest.json", b"{not json", "application/json")
    await store.put_bytes("lessons/half/manifest.json", b'{"id": "half"}', "application/json")
    report = await catalog.reindex()
    assert report.indexed == 12
    assert [k for k, _ in report.skipped] == ["lessons/broken/manifest.json",
                                              "lessons/half/manifest.json"]
    rebuilt = await catalog.search(Query(limit=100))
    assert rebuilt.lessons == live.lessons and rebuilt.facets == live.facets


async def test_missing_objects_show_as_missing(client: TestClient,
                                               token: Callable[..., str]) -> None:
    store = client.app[STORE_KEY]
    manifests = await seed(store, 2)
    await client.app[CATALOG_KEY].reindex()
    await store.delete_keys([manifests[0].playlist])
    status, body = await api(client, token("viewer"), f"/api/lessons/{manifests[0].id}")
    assert status == 200 and body["lesson"]["status"] == "missing"
    _, body = await api(client, token("viewer"), "/api/lessons", status="missing")
    assert [x["id"] for x in body["lessons"]] == [manifests[0].id]


async def test_edit_and_delete(client: TestClient, token: Callable[..., str]) -> None:
    store, catalog = client.app[STORE_KEY], client.app[CATALOG_KEY]
    manifests = await seed(store, 3)
    await catalog.reindex()
    target = manifests[1]
    path = f"/api/lessons/{target.id}"

    async def patch(who: str, body: object) -> int:
        resp = await client.patch(path, json=body, headers={"Authorization": f"Bearer {who}"})
        return resp.status

    edit = {"title": "分数的意义（第二课时）", "description": "复习与练习",
            "tags": ["分数", "复习"]}
    assert await patch(token("classroom", target.room), edit) == 403
    assert await patch(token("teacher", "another-room"), edit) == 403
    assert await patch(token("teacher", target.room), {"title": ""}) == 400
    assert await patch(token("teacher", target.room), {"colour": "red"}) == 400
    assert await patch(token("teacher", target.room), {"tags": "notalist"}) == 400
    assert await patch(token("teacher", target.room), edit) == 200
    stored = Manifest.from_json(await store.get_bytes(f"lessons/{target.id}/manifest.json"))
    assert stored.lesson.title == edit["title"] and stored.extra["tags"] == ["分数", "复习"]
    assert stored.segments == target.segments  # everything else is kept
    _, body = await api(client, token("viewer"), "/api/lessons", q="复习")
    assert [x["id"] for x in body["lessons"]] == [target.id]
    await catalog.reindex()  # the edit is in the bucket, so it survives a rebuild
    assert (await catalog.get(target.id, check=False)).title == edit["title"]

    resp = await client.delete(path, headers={"Authorization": f"Bearer {token('teacher')}"})
    assert resp.status == 403
    resp = await client.delete(path, headers={"Authorization": f"Bearer {token('admin')}"})
    assert resp.status == 204
    assert not await store.list_keys(f"lessons/{target.id}/")
    status, _ = await api(client, token("viewer"), path)
    assert status == 404


@pytest.mark.parametrize("playback", ["proxy", "presigned"])
async def test_a_recorded_lesson_is_found_and_plays(
        aiohttp_client: Callable[..., Awaitable[TestClient]], settings: Settings,
        playback: str, tmp_path: Path) -> None:
    settings = dataclasses.replace(recording_settings(settings, grace_s=0.5),
                                   catalog=dataclasses.replace(settings.catalog,
                                                               playback=playback))
    client, peers = await recorder_app(aiohttp_client, settings)
    service = client.app[RECORDINGS_KEY]
    try:
        teacher = peers.token("teacher", "maths-5a")
        await peers.publish("maths-5a")
        await eventually(lambda: service.status("maths-5a")[0] is not None)
        recording = service._rooms["maths-5a"].recording
        await eventually(lambda: recording._streams["video"].frames > 150, timeout=30)
        await client.post("/api/rooms/maths-5a/recording", json={"action": "stop"},
                          headers={"Authorization": f"Bearer {teacher}"})
        await service.recorder.wait_finished()
    finally:
        await peers.close()
    viewer = peers.token("viewer")
    status, body = await api(client, viewer, "/api/lessons", room="maths-5a")
    assert status == 200 and body["total"] == 1
    lesson = body["lessons"][0]
    assert lesson["status"] == "complete" and lesson["duration_s"] > 4
    url = str(client.make_url(lesson["playback"]["playlist"]))
    probe = await asyncio.to_thread(subprocess.run, [
        "ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", url],
        capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr
    assert abs(float(probe.stdout) - lesson["duration_s"]) < 1.0
    decode = await asyncio.to_thread(subprocess.run, [
        "ffmpeg", "-v", "error", "-nostdin", "-i", url, "-f", "null", "-"],
        capture_output=True, text=True)
    assert decode.returncode == 0 and decode.stderr == "", decode.stderr
    # the whole lesson as one MP4, joined with -c copy on the first request
    resp = await client.get(lesson["playback"]["download"])
    assert resp.status == 200, await resp.text()
    mp4 = await resp.read()
    assert mp4[4:8] == b"ftyp"
    keys = await client.app[STORE_KEY].list_keys(f"lessons/{lesson['id']}/")
    assert f"lessons/{lesson['id']}/lesson.mp4" in keys  # kept for the next download
    path = tmp_path / "lesson.mp4"
    path.write_bytes(mp4)
    probe = await asyncio.to_thread(subprocess.run, [
        "ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
        str(path)], capture_output=True, text=True)
    assert abs(float(probe.stdout) - lesson["duration_s"]) < 1.0
    if playback == "proxy":  # byte ranges through the server
        media = f"/api/lessons/{lesson['id']}/media/init.mp4"
        resp = await client.get(media, headers={"Authorization": f"Bearer {viewer}",
                                                "Range": "bytes=0-99"})
        assert resp.status == 206 and len(await resp.read()) == 100
        assert resp.headers["Content-Range"].startswith("bytes 0-99/")
        resp = await client.get(media, headers={"Authorization": f"Bearer {viewer}",
                                                "Range": "bytes=-10"})
        assert resp.status == 206 and len(await resp.read()) == 10
        resp = await client.get(f"/api/lessons/{lesson['id']}/media/../secret",
                                headers={"Authorization": f"Bearer {viewer}"})
        assert resp.status == 404
