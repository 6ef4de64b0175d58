"""Recording for real: aiortc teacher → relay → recorder subscriber → ffmpeg → HLS → S3 server."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from recorder.manifest import Manifest
from server.app import create_app
from server.keys import RECORDINGS_KEY, STORE_KEY
from server.settings import Settings
from server.storage import S3Store
from tests.conftest import Peers, eventually

PREFIX = "lessons/"


def recording_settings(settings: Settings, **recorder: object) -> Settings:
    return dataclasses.replace(settings, recorder=dataclasses.replace(
        settings.recorder, **{"auto_start": True, "grace_s": 1.5, **recorder}))


async def recorder_app(aiohttp_client: Callable[..., Awaitable[TestClient]],
                       settings: Settings) -> tuple[TestClient, Peers]:
    client = await aiohttp_client(create_app(settings))
    from server.keys import ISSUER_KEY
    from server.tokens import Role

    def mint(role: str, room: str | None = None, ttl_s: int = 3600, subject: str = "") -> str:
        return client.app[ISSUER_KEY].mint(Role(role), room, ttl_s, subject)

    return client, Peers(client, mint)


async def keys(store: S3Store, suffix: str = "") -> list[str]:
    return [k for k in await store.list_keys(PREFIX) if k.endswith(suffix)]


async def download(store: S3Store, prefix: str, into: Path) -> None:
    for key in await store.list_keys(prefix):
        (into / key.rsplit("/", 1)[-1]).write_bytes(await store.get_bytes(key))


def probe(playlist: Path) -> tuple[float, str]:
    """(duration from ffprobe, decode errors from a full decode with ffmpeg)."""
    duration = float(subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
         str(playlist)], capture_output=True, text=True, check=True).stdout.strip())
    decode = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", str(playlist), "-f",
                             "null", "-"], capture_output=True, text=True)
    return duration, decode.stderr.strip()


async def finished_manifest(store: S3Store) -> Manifest:
    manifests = await keys(store, "manifest.json")
    assert len(manifests) == 1, manifests
    return Manifest.from_json(await store.get_bytes(manifests[0]))


async def test_a_lesson_is_recorded_while_it_runs_and_plays_back(
        aiohttp_client: Callable[..., Awaitable[TestClient]], settings: Settings,
        tmp_path: Path) -> None:
    client, peers = await recorder_app(aiohttp_client, recording_settings(settings))
    store = client.app[STORE_KEY]
    service = client.app[RECORDINGS_KEY]
    try:
        teacher, _ = await peers.publish("history")
        # segments reach the bucket while the lesson runs, the playlist with them
        await eventually(lambda: service.status("history")[0] is not None, what="recording")
        for _ in range(300):
            if len(await keys(store, ".m4s")) >= 2 and await keys(store, "index.m3u8"):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("no segments in the bucket during the lesson")
        live_playlist = (await store.get_bytes((await keys(store, "index.m3u8"))[0])).decode()
        assert "#EXT-X-ENDLIST" not in live_playlist
        recording = service._rooms["history"].recording
        await asyncio.sleep(4)  # let the lesson run a little longer
        await teacher.close()  # the lesson ends; after the grace period the recording does
        await eventually(lambda: "history" not in service._rooms, timeout=20, what="stopped")
        await service.recorder.wait_finished()
    finally:
        await peers.close()
    manifest = await finished_manifest(store)
    assert manifest.status == "complete" and manifest.room == "history"
    assert manifest.codecs == {"video": "H264", "audio": "opus"}
    assert manifest.thumbnail and manifest.lesson.teacher == "teacher"
    await download(store, PREFIX + manifest.id + "/", tmp_path)
    duration, errors = probe(tmp_path / "index.m3u8")
    assert errors == "", errors
    published = recording._streams["video"].frames / 30
    # everything fed to ffmpeg is in the archive, the last (partial) segment included
    assert abs(duration - published) < 0.2, (duration, published)
    assert abs(duration - manifest.duration_s) < 1.0
    assert (tmp_path / "thumb.jpg").read_bytes()[:2] == b"\xff\xd8"
    assert not list((Path(settings.data_dir) / "spool").iterdir()), "spool not cleaned"


async def test_teacher_reconnect_within_grace_is_one_recording(
        aiohttp_client: Callable[..., Awaitable[TestClient]], settings: Settings) -> None:
    client, peers = await recorder_app(aiohttp_client,
                                       recording_settings(settings, grace_s=5.0))
    service = client.app[RECORDINGS_KEY]
    store = client.app[STORE_KEY]
    try:
        first, _ = await peers.publish("art")
        await eventually(lambda: service.status("art")[0] is not None, what="recording")
        recording_id = service._rooms["art"].recording.id
        await eventually(lambda: service._rooms["art"].recording._streams["video"].frames > 60)
        await first.close()
        await peers.publish("art")  # back within the grace period
        recording = service._rooms["art"].recording
        assert recording.id == recording_id
        before = recording._streams["video"].frames
        await eventually(lambda: recording._streams["video"].frames > before + 60)
        await service.stop("art")
        await service.recorder.wait_finished()
    finally:
        await peers.close()
    manifest = await finished_manifest(store)
    assert manifest.id == recording_id and manifest.status == "complete"


async def test_vp8_lesson_is_not_recorded_and_says_why(
        aiohttp_client: Callable[..., Awaitable[TestClient]], settings: Settings) -> None:
    client, peers = await recorder_app(aiohttp_client, recording_settings(settings))
    service = client.app[RECORDINGS_KEY]
    try:
        await peers.publish("music", codec="video/VP8")
        await eventually(lambda: service.status("music")[1] is not None, what="error")
        assert "VP8" in (service.status("music")[1] or "")
        admin = peers.token("admin")
        resp = await client.get("/api/rooms/music/recording",
                                headers={"Authorization": f"Bearer {admin}"})
        body = await resp.json()
        assert resp.status == 200 and body["recording"] is None and "VP8" in body["error"]
        resp = await client.post("/api/rooms/music/recording", json={"action": "start"},
                                 headers={"Authorization": f"Bearer {admin}"})
        assert resp.status == 422 and "H264" in (await resp.json())["message"]
    finally:
        await peers.close()
    assert json.dumps(await client.app[STORE_KEY].list_keys(PREFIX)) == "[]"


@pytest.mark.parametrize("action", ["start", "stop"])
async def test_recording_api_controls(
        aiohttp_client: Callable[..., Awaitable[TestClient]], settings: Settings,
        action: str) -> None:
    client, peers = await recorder_app(aiohttp_client, settings)  # auto start off
    service = client.app[RECORDINGS_KEY]
    try:
        await peers.publish("lab")
        teacher = peers.token("teacher", "lab")
        classroom = peers.token("classroom", "lab")
        auth = {"Authorization": f"Bearer {teacher}"}
        resp = await client.post("/api/rooms/lab/recording", json={"action": action},
                                 headers={"Authorization": f"Bearer {classroom}"})
        assert resp.status == 403
        resp = await client.post("/api/rooms/lab/recording", data="{", headers=auth)
        assert resp.status == 400
        if action == "stop":
            resp = await client.post("/api/rooms/lab/recording", json={"action": "stop"},
                                     headers=auth)
            assert resp.status == 409
            return
        resp = await client.post("/api/rooms/lab/recording", json={
            "action": "start", "title": "分数的意义", "subject": "数学", "grade": "5"},
            headers=auth)
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        assert body["recording"]["status"] == "recording"
        await eventually(lambda: service._rooms["lab"].recording._streams["video"].frames > 90)
        resp = await client.post("/api/rooms/lab/recording", json={"action": "stop"},
                                 headers=auth)
        assert resp.status == 200
        await service.recorder.wait_finished()
        manifest = await finished_manifest(client.app[STORE_KEY])
        assert manifest.lesson.title == "分数的意义" and manifest.lesson.subject == "数学"
    finally:
        await peers.close()
