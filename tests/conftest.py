"""Shared fixtures: a real ClassCast app on a random loopback port, tokens, and real peers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender

from server import settings as settings_mod
from server.app import create_app
from server.http import ISSUER_KEY
from server.settings import Settings
from server.tokens import Role
from server.whipclient import WhipSession
from tests.media import FrameCounter, PatternVideoTrack, ToneAudioTrack

LOOPBACK = ("127.0.0.1",)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return settings_mod.build(data_dir=str(tmp_path / "data"), ice__addresses=LOOPBACK,
                              ice__connect_timeout_s=10.0, relay__keyframe_interval_s=0.5)


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
                      video: bool = True) -> tuple[WhipSession, PatternVideoTrack | None]:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        vtrack = None
        if video:
            vtrack = PatternVideoTrack()
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
