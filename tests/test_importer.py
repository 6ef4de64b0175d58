"""Importing lessons recorded elsewhere: remuxed when H264, encoded once otherwise, then
archived and indexed like a live recording (real ffmpeg, real S3 server, real index)."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from recorder.manifest import LessonInfo, Manifest
from server.importer import ImportFailed, ImportRequest, import_lesson
from server.keys import CATALOG_KEY, STORE_KEY


def make_file(path: Path, video: list[str], audio: list[str], seconds: int = 7) -> Path:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
                    "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=25:duration={seconds}",
                    "-f", "lavfi", "-i", f"sine=frequency=330:duration={seconds}",
                    *video, *audio, "-shortest", str(path)], check=True)
    return path


@pytest.mark.parametrize(("name", "video", "audio", "how"), [
    ("appliance.mp4", ["-c:v", "libx264", "-g", "50", "-pix_fmt", "yuv420p"], ["-c:a", "aac"],
     "remuxed"),
    ("phone.webm", ["-c:v", "libvpx-vp9", "-b:v", "300k", "-deadline", "realtime"],
     ["-c:a", "libopus"], "encoded"),
])
async def test_import_archives_and_indexes(client: TestClient, token: Callable[..., str],
                                           tmp_path: Path, name: str, video: list[str],
                                           audio: list[str], how: str) -> None:
    source = await asyncio.to_thread(make_file, tmp_path / name, video, audio)
    store = client.app[STORE_KEY]
    manifest = await import_lesson(ImportRequest(
        path=source, lesson=LessonInfo(school="乐山市第一小学", subject="数学", grade="5",
                                       title="分数的初步认识", teacher="王老师"),
        room="maths-5a", county="市中区", tags=("分数",)), store)
    assert manifest.extra["video"] == how and manifest.status == "complete"
    assert abs(manifest.duration_s - 7) < 1.0 and manifest.thumbnail
    key = manifest.playlist.rsplit("/", 1)[0] + "/manifest.json"
    stored = Manifest.from_json(await store.get_bytes(key))
    assert stored.id == manifest.id
    # indexed through the admin API, as `classcast catalog import` does with a running server
    resp = await client.post("/api/catalog/manifests", json={"key": key},
                             headers={"Authorization": f"Bearer {token('admin')}"})
    assert resp.status == 201
    resp = await client.get("/api/lessons", params={"q": "分数 乐山"},
                            headers={"Authorization": f"Bearer {token('viewer')}"})
    lessons = (await resp.json())["lessons"]
    assert [x["id"] for x in lessons] == [manifest.id]
    url = str(client.make_url(lessons[0]["playback"]["playlist"]))
    probe = await asyncio.to_thread(subprocess.run, [
        "ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width", "-of", "csv=p=0",
        url], capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr
    assert "h264,640" in probe.stdout
    assert await client.app[CATALOG_KEY].index.all_ids() == [manifest.id]


async def test_import_refuses_what_it_cannot_read(client: TestClient, tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video")
    with pytest.raises(ImportFailed, match="cannot read"):
        await import_lesson(ImportRequest(path=junk, lesson=LessonInfo(title="x")),
                            client.app[STORE_KEY])
    assert await client.app[STORE_KEY].list_keys("lessons/") == []
    resp = await client.post("/api/catalog/manifests", json={"key": "elsewhere"})
    assert resp.status == 401
