"""Shared fixtures: a real ClassCast app on a random loopback port, tokens, and real peers."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender

from server import settings as settings_mod
from server.app import create_app
from server.keys import ISSUER_KEY
from server.s3server import EmbeddedS3
from server.settings import Settings
from server.tokens import Role
from server.whipclient import WhipSession
from tests.media import FrameCounter, PatternVideoTrack, ToneAudioTrack

LOOPBACK = ("127.0.0.1",)


S3_ACCESS, S3_SECRET = "classcast-test", "classcast-test-secret-key"


class S3Server:
    """A real S3 server (SeaweedFS `weed mini`) for the whole test session, on loopback."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.embedded = EmbeddedS3(directory, S3_ACCESS, S3_SECRET)
        self.process: subprocess.Popen[bytes] | None = None
        self.argv = self.embedded.argv()  # fixes the ports, so a restart reuses them

    @property
    def endpoint(self) -> str:
        return self.embedded.endpoint.endpoint

    def start(self) -> None:
        (self.directory / "log").mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "AWS_ACCESS_KEY_ID": S3_ACCESS, "AWS_SECRET_ACCESS_KEY": S3_SECRET}
        self.process = subprocess.Popen(self.argv, env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://{self.endpoint}/", timeout=1)
            except urllib.error.HTTPError as exc:
                if exc.code == 403:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("the test S3 server did not start")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("s3"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def bucket(request: pytest.FixtureRequest) -> str:
    return "t-" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40].strip("-") + \
        f"-{os.getpid() % 1000}"


@pytest.fixture
def settings(tmp_path: Path, s3_server: S3Server, bucket: str) -> Settings:
    return settings_mod.build(data_dir=str(tmp_path / "data"), ice__addresses=LOOPBACK,
                              ice__connect_timeout_s=10.0, relay__keyframe_interval_s=0.5,
                              s3__endpoint=s3_server.endpoint, s3__access_key=S3_ACCESS,
                              s3__secret_key=S3_SECRET, s3__bucket=bucket,
                              recorder__auto_start=False)


@pytest.fixture
async def client(aiohttp_client: Callable[..., Awaitable[TestClient]],
                 settings: Settings) -> TestClient:
    return await aiohttp_client(create_app(settings))


@pytest.fixture
def token(client: TestClient) -> Callable[..., str]:
    def mint(role: str, room: str | None = None, ttl_s: int = 3600, subject: str = "") -> str:
        return client.app[ISSUER_KEY].mint(Role(role), room, ttl_s, subject)
    return mint


class Peers:
    """Real aiortc publishers and subscribers talking to the test server over UDP."""

    def __init__(self, client: TestClient, token: Callable[..., str]) -> None:
        self.client = client
        self.token = token
        self.sessions: list[WhipSession] = []

    def url(self, path: str) -> str:
        return str(self.client.make_url(path))

    async def publish(self, room: str, codec: str = "video/H264", audio: bool = True,
                      video: bool = True, size: tuple[int, int] = (320, 240)
                      ) -> tuple[WhipSession, PatternVideoTrack | None]:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        vtrack = None
        if video:
            vtrack = PatternVideoTrack(*size)
            t = pc.addTransceiver(vtrack, direction="sendonly")
            caps = RTCRtpSender.getCapabilities("video").codecs
            t.setCodecPreferences([c for c in caps if c.mimeType in (codec, "video/rtx")])
        if audio:
            pc.addTransceiver(ToneAudioTrack(), direction="sendonly")
        session = WhipSession(self.url(f"/whip/{room}"), self.token("teacher", room),
                              ice_addresses=LOOPBACK, pc=pc)
        self.sessions.append(session)
        await session.start()
        return session, vtrack

    async def subscribe(self, room: str, role: str = "classroom"
                        ) -> tuple[WhipSession, dict[str, FrameCounter]]:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")
        counters: dict[str, FrameCounter] = {}

        @pc.on("track")
        def on_track(track: object) -> None:
            counters[track.kind] = FrameCounter(track)  # type: ignore[attr-defined]

        session = WhipSession(self.url(f"/whep/{room}"), self.token(role, room),
                              ice_addresses=LOOPBACK, pc=pc)
        self.sessions.append(session)
        await session.start()
        await eventually(lambda: len(counters) == 2, what="both tracks")
        return session, counters

    async def close(self) -> None:
        for s in self.sessions:
            await s.close()


async def eventually(predicate: Callable[[], bool], timeout: float = 15.0,
                     what: str = "condition") -> None:
    """Poll `predicate` until it holds (a bounded wait on observable state, not a sleep)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def peers(client: TestClient, token: Callable[..., str]) -> AsyncIterator[Peers]:
    p = Peers(client, token)
    yield p
    await p.close()
