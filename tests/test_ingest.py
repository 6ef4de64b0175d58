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


def make_lesson_file(path: Path, seconds: int = 6) -> Path:
    """An MP4 as a classroom recording appliance writes it: H264 (AVCC) + AAC."""
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=30:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
         "-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-shortest", str(path)], check=True)
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
