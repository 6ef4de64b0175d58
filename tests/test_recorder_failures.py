"""Recording when things go wrong: the S3 server goes away mid-lesson, the credentials are
wrong, the spool's disk budget runs out, the service is killed. Nothing recorded is lost."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from recorder.manifest import Manifest
from server.keys import RECORDINGS_KEY, STORE_KEY
from server.settings import Settings
from server.storage import S3Store
from server.tokens import Role, TokenIssuer
from server.whipclient import WhipSession
from tests.conftest import LOOPBACK, S3_ACCESS, S3_SECRET, S3Server, eventually
from tests.media import PatternVideoTrack, ToneAudioTrack
from tests.test_recorder import (
    PREFIX,
    download,
    finished_manifest,
    keys,
    probe,
    recorder_app,
    recording_settings,
)


@pytest.fixture
def private_s3(tmp_path: Path) -> Iterator[S3Server]:
    """An S3 server this test may stop and restart (the session one is shared)."""
    server = S3Server(tmp_path / "s3")
    server.start()
    yield server
    server.stop()


async def wait_keys(store: S3Store, suffix: str, count: int, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while len(await keys(store, suffix)) < count:
            await asyncio.sleep(0.2)


def spooled_segments(settings: Settings) -> list[Path]:
    return sorted((Path(settings.data_dir) / "spool").glob("*/seg_*.m4s"))


async def test_s3_outage_mid_lesson_loses_no_segment(
        aiohttp_client: Callable[..., Awaitable[TestClient]], settings: Settings,
        private_s3: S3Server, tmp_path: Path) -> None:
    settings = dataclasses.replace(recording_settings(settings), s3=dataclasses.replace(
        settings.s3, endpoint=private_s3.endpoint))
    client, peers = await recorder_app(aiohttp_client, settings)
    store, service = client.app[STORE_KEY], client.app[RECORDINGS_KEY]
    try:
        await peers.publish("outage")
        await wait_keys(store, ".m4s", 2)
        recording = service._rooms["outage"].recording
        private_s3.stop()  # the archive goes away; the lesson goes on
        await eventually(lambda: recording.upload_error is not None, what="upload error")
        await eventually(lambda: len(spooled_segments(settings)) >= 4, timeout=30,
                         what="segments spooled during the outage")
        private_s3.start()
        await eventually(lambda: recording.upload_error is None and
                         len(spooled_segments(settings)) <= 1, timeout=30, what="catch-up")
        await service.stop("outage")
        await service.recorder.wait_finished()
        manifest = await finished_manifest(store)
        frames = recording._streams["video"].frames
    finally:
        await peers.close()
    stored = await keys(store, ".m4s")
    assert len(stored) == manifest.segments, "a segment is missing from the bucket"
    await download(store, PREFIX + manifest.id + "/", tmp_path)
    duration, errors = probe(tmp_path / "index.m3u8")
    assert errors == ""
    assert abs(duration - frames / 30) < 1.0


async def test_wrong_credentials_keep_everything_spooled_then_upload(
        aiohttp_client: Callable[..., Awaitable[TestClient]], settings: Settings) -> None:
    wrong = dataclasses.replace(recording_settings(settings), s3=dataclasses.replace(
        settings.s3, secret_key="not-the-secret"))
    client, peers = await recorder_app(aiohttp_client, wrong)
    service = client.app[RECORDINGS_KEY]
    try:
        await peers.publish("creds")
        await eventually(lambda: len(spooled_segments(wrong)) >= 2, timeout=30)
        admin = peers.token("admin")
        resp = await client.get("/api/rooms/creds/recording",
                                headers={"Authorization": f"Bearer {admin}"})
        info = (await resp.json())["recording"]
        assert info["status"] == "recording"
        assert "SignatureDoesNotMatch" in info["upload_error"] or \
            "refused" in info["upload_error"], info
        text = await (await client.get("/metrics")).text()
        failures = [s.value for f in text_string_to_metric_families(text) for s in f.samples
                    if s.name == "classcast_recorder_upload_failures_total"]
        assert failures and failures[0] > 0
        await service.stop("creds")  # the lesson ends while the archive still refuses
    finally:
        await peers.close()
    await client.close()  # shutdown: what S3 has not taken stays in the spool
    kept = spooled_segments(wrong)
    assert len(kept) >= 2, "spooled segments were lost"
    # the next start, with the right credentials, archives it all
    client2, _ = await recorder_app(aiohttp_client, dataclasses.replace(
        settings, recorder=wrong.recorder))
    await client2.app[RECORDINGS_KEY].recorder.wait_finished()
    manifest = await finished_manifest(client2.app[STORE_KEY])
    assert manifest.status == "complete" and manifest.segments >= len(kept)
    assert not spooled_segments(wrong)


async def test_disk_budget_halts_recording_and_keeps_what_it_has(
        aiohttp_client: Callable[..., Awaitable[TestClient]], settings: Settings) -> None:
    tight = dataclasses.replace(settings, s3=dataclasses.replace(
        settings.s3, secret_key="not-the-secret"), recorder=dataclasses.replace(
        settings.recorder, auto_start=True, spool_budget_mb=0.15))
    client, peers = await recorder_app(aiohttp_client, tight)
    service = client.app[RECORDINGS_KEY]
    try:
        await peers.publish("budget")
        await eventually(lambda: service.status("budget")[0] is not None)
        await eventually(lambda: getattr(service.status("budget")[0], "status", "") == "halted",
                         timeout=40, what="halted at the budget")
        info = service.status("budget")[0]
        assert info is not None and "disk budget" in (info.error or "")
        kept = spooled_segments(tight)
        assert kept, "the recording halted but its segments are gone"
        teacher = peers.token("teacher", "budget")
        await service.stop("budget")
        resp = await client.post("/api/rooms/budget/recording", json={"action": "start"},
                                 headers={"Authorization": f"Bearer {teacher}"})
        assert resp.status == 507 and "budget" in (await resp.json())["message"]
    finally:
        await peers.close()
    await client.close()
    assert len(spooled_segments(tight)) >= len(kept)


@pytest.fixture
async def served(tmp_path: Path, s3_server: S3Server, bucket: str
                 ) -> AsyncIterator[Callable[[], Awaitable[subprocess.Popen[bytes]]]]:
    """Runs `classcast serve` as its own process (so a test can kill it)."""
    from server.s3server import free_ports

    port = free_ports(1)[0]
    env = {**os.environ, "CLASSCAST_PORT": str(port), "CLASSCAST_ICE_ADDRESSES": "127.0.0.1",
           "CLASSCAST_SECRET": "x" * 40, "CLASSCAST_S3_ENDPOINT": s3_server.endpoint,
           "CLASSCAST_S3_ACCESS_KEY": S3_ACCESS, "CLASSCAST_S3_SECRET_KEY": S3_SECRET,
           "CLASSCAST_S3_BUCKET": bucket, "CLASSCAST_DATA_DIR": str(tmp_path / "data")}
    processes: list[subprocess.Popen[bytes]] = []

    async def start() -> subprocess.Popen[bytes]:
        process = subprocess.Popen([sys.executable, "-m", "server.cli", "serve"], env=env,
                                   stdout=subprocess.DEVNULL, stderr=open(
                                       tmp_path / f"serve{len(processes)}.log", "wb"))
        processes.append(process)
        import aiohttp
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as r:
                        if r.status == 200:
                            return process
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError("classcast serve did not start")

    start.port = port  # type: ignore[attr-defined]
    yield start
    for p in processes:
        if p.poll() is None:
            p.terminate()
            p.wait(20)


async def test_service_killed_mid_lesson_recording_is_finalized_as_interrupted(
        served: Callable[[], Awaitable[subprocess.Popen[bytes]]], s3_server: S3Server,
        bucket: str, tmp_path: Path) -> None:
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender

    server = await served()
    port = served.port  # type: ignore[attr-defined]
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    video = pc.addTransceiver(PatternVideoTrack(), direction="sendonly")
    video.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                               if c.mimeType in ("video/H264", "video/rtx")])
    pc.addTransceiver(ToneAudioTrack(), direction="sendonly")
    token = TokenIssuer("x" * 40).mint(Role.TEACHER, "crash")
    teacher = WhipSession(f"http://127.0.0.1:{port}/whip/crash", token, ice_addresses=LOOPBACK,
                          pc=pc)
    store = S3Store(s3_server.endpoint, S3_ACCESS, S3_SECRET, bucket)
    try:
        await teacher.start()
        await wait_keys(store, ".m4s", 3)
        server.send_signal(signal.SIGKILL)  # no cleanup of any kind
        server.wait(10)
        teacher.location = None  # nobody to DELETE
    finally:
        await teacher.close()
    assert not await keys(store, "manifest.json")
    await served()  # the next start finds the spool and archives it
    async with asyncio.timeout(60):
        while not await keys(store, "manifest.json"):
            await asyncio.sleep(0.3)
    manifest: Manifest = await finished_manifest(store)
    assert manifest.status == "interrupted" and manifest.segments >= 3
    await download(store, PREFIX + manifest.id + "/", tmp_path)
    duration, errors = probe(tmp_path / "index.m3u8")
    assert errors == "" and duration >= 5.0
    assert abs(duration - manifest.duration_s) < 1.0
