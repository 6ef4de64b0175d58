"""`classcast ingest` path: a real ffmpeg normalises a file, aiortc's non-decoding player
publishes it over WHIP, and a classroom decodes what the relay forwards."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from server.ingest import IngestError, ingest
from server.keys import RELAY_KEY
from tests.conftest import LOOPBACK, Peers, eventually


def make_lesson_file(path: Path, seconds: int = 6, gop: int = 30) -> Path:
    """An MP4 as a classroom recording appliance writes it: H264 (AVCC) + AAC, a keyframe
    every `gop` frames."""
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=30:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
         "-c:v", "libx264", "-preset", "ultrafast", "-g", str(gop), "-keyint_min", str(gop),
         "-sc_threshold", "0", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path)],
        check=True)
    return path


async def test_ingest_a_file_and_watch_it(peers: Peers, tmp_path: Path) -> None:
    source = make_lesson_file(tmp_path / "lesson.mp4")
    stop = asyncio.Event()
    task = asyncio.create_task(ingest(str(source), peers.url("/whip/camera"),
                                      peers.token("teacher", "camera"),
                                      ice_addresses=LOOPBACK, stop=stop))
    relay = peers.client.app[RELAY_KEY]
    try:
        await eventually(lambda: relay.rooms.get("camera") is not None
                         and relay.room_info("camera").live, what="ingest live")
        _, counters = await peers.subscribe("camera")
        await counters["video"].wait_for(45)
        await counters["audio"].wait_for(50)
        assert set(counters["video"].sizes) == {(640, 360)}
        assert {t.kind: t.codec for t in relay.room_info("camera").tracks} == {
            "audio": "audio/opus", "video": "video/H264"}
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
    await eventually(lambda: relay.rooms.get("camera") is None
                     or not relay.room_info("camera").live, what="ingest ended")


async def test_ingest_of_a_missing_source_says_why(peers: Peers, tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="cannot read"):
        await ingest(str(tmp_path / "nope.mp4"), peers.url("/whip/camera"),
                     peers.token("teacher", "camera"), ice_addresses=LOOPBACK)
    assert peers.client.app[RELAY_KEY].sessions == {}


async def test_a_classroom_joining_a_source_deaf_to_keyframe_requests_starts_at_once(
        peers: Peers, tmp_path: Path) -> None:
    """An ingested file keeps its own GOP (here 5 s) and cannot answer a PLI: the relay
    notices, and a classroom joining later starts from the frames since the last keyframe
    instead of waiting for the next one."""
    source = make_lesson_file(tmp_path / "long-gop.mp4", seconds=20, gop=150)
    stop = asyncio.Event()
    task = asyncio.create_task(ingest(str(source), peers.url("/whip/deaf"),
                                      peers.token("teacher", "deaf"),
                                      ice_addresses=LOOPBACK, stop=stop))
    relay = peers.client.app[RELAY_KEY]
    try:
        await eventually(lambda: relay.rooms.get("deaf") is not None
                         and relay.room_info("deaf").live, what="ingest live")
        track = relay.rooms.get("deaf").tracks["video"]
        await eventually(lambda: track.frames_in > 30, what="the file past its first keyframe")
        _, first = await peers.subscribe("deaf")
        await eventually(lambda: not track.answers_keyframes, what="the relay to notice")
        await first["video"].wait_for(5, timeout=15)  # the file's own next keyframe
        cached = track.cached_keyframe_at
        _, later = await peers.subscribe("deaf")
        await later["video"].wait_for(1, timeout=10)
        # its picture came before the file's next keyframe: from the cache
        assert track.cached_keyframe_at == cached
        text = await (await peers.client.get("/metrics")).text()
        assert "classcast_relay_gop_replays_total 1.0" in text
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
