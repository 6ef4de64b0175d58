"""The relay end to end: real aiortc peers over UDP on loopback, through WHIP/WHEP."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable

import pytest
from aiohttp.test_utils import TestClient
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
)
from prometheus_client.parser import text_string_to_metric_families

from server.app import create_app
from server.keys import RELAY_KEY
from server.settings import Settings
from server.whipclient import WhipSession
from tests.conftest import LOOPBACK, Peers, eventually
from tests.media import FrameCounter, PatternVideoTrack, ToneAudioTrack


@pytest.mark.parametrize("codec", ["video/H264", "video/VP8"])
async def test_frames_reach_every_subscriber_in_order(peers: Peers, codec: str) -> None:
    await peers.publish("maths-1", codec=codec)
    subs = [await peers.subscribe("maths-1") for _ in range(3)]
    for _, counters in subs:
        await counters["video"].wait_for(30)
        await counters["audio"].wait_for(50)
        for kind in ("video", "audio"):
            pts = counters[kind].pts
            assert pts == sorted(pts), f"{kind} frames out of order"
            assert len(set(pts)) == len(pts), f"{kind} frames repeated"
        assert set(counters["video"].sizes) == {(320, 240)}
    relay = peers.client.app[RELAY_KEY]
    assert relay.room_info("maths-1").subscriber_count == 3


async def test_late_joiner_starts_at_a_keyframe(peers: Peers,
                                                caplog: pytest.LogCaptureFixture) -> None:
    await peers.publish("late")
    _, first = await peers.subscribe("late")
    await first["video"].wait_for(45)  # the lesson has been running for a while
    caplog.set_level(logging.WARNING, logger="aiortc.rtcrtpreceiver")
    _, late = await peers.subscribe("late")
    await late["video"].wait_for(30)
    # a decoder handed a delta frame first fails and says so; this one decoded every frame
    assert not [r for r in caplog.records if "failed to decode" in r.getMessage()]
    room = peers.client.app[RELAY_KEY].rooms.get("late")
    assert room is not None
    assert all(t.first_frame_keyframe for t in room.tracks["video"].subscribers)


async def test_teacher_leaves_and_returns_subscribers_resume(peers: Peers) -> None:
    teacher, _ = await peers.publish("physics")
    classroom, counters = await peers.subscribe("physics")
    await counters["video"].wait_for(20)
    await teacher.close()
    relay = peers.client.app[RELAY_KEY]
    await eventually(lambda: not relay.room_info("physics").live, what="room not live")
    assert classroom.pc.connectionState == "connected"
    before = counters["video"].count
    await peers.publish("physics")  # the teacher reconnects
    await counters["video"].wait_for(before + 30)
    await counters["audio"].wait_for(counters["audio"].count + 20)
    assert classroom.pc.connectionState == "connected"
    pts = counters["video"].pts
    assert pts == sorted(pts), "timestamps went backwards across the reconnect"


async def test_same_teacher_reconnecting_takes_over_before_the_old_session_times_out(
        peers: Peers) -> None:
    old, _ = await peers.publish("geo")
    classroom, counters = await peers.subscribe("geo")
    await counters["video"].wait_for(20)
    # the old session is still connected (as after a silent network drop): publish again
    new, _ = await peers.publish("geo")
    relay = peers.client.app[RELAY_KEY]
    await eventually(lambda: [p.id for p in relay.room_info("geo").publishers]
                     == [new.location.rsplit("/", 1)[-1]] if new.location else False)
    await counters["video"].wait_for(counters["video"].count + 30)
    assert classroom.pc.connectionState == "connected"
    assert old.location is not None


async def test_subscriber_that_never_connects_is_bounded_and_closed(
        aiohttp_client: Callable[..., Awaitable[TestClient]], settings: Settings) -> None:
    settings = dataclasses.replace(
        settings, ice=dataclasses.replace(settings.ice, connect_timeout_s=3.0),
        relay=dataclasses.replace(settings.relay, video_queue_frames=20))
    client = await aiohttp_client(create_app(settings))
    from server.keys import ISSUER_KEY
    from server.tokens import Role

    def mint(role: str, room: str | None = None) -> str:
        return client.app[ISSUER_KEY].mint(Role(role), room)

    peers = Peers(client, mint)
    try:
        await peers.publish("stall")
        _, healthy = await peers.subscribe("stall")
        stalled, _ = await peers.subscribe("stall")
        await stalled.pc.close()  # gone without a DELETE and without a goodbye on the wire
        relay = client.app[RELAY_KEY]
        room = relay.rooms.get("stall")
        assert room is not None
        start = healthy["video"].count
        await healthy["video"].wait_for(start + 60)  # the others keep getting every frame
        assert all(t.queued <= 20 for t in room.tracks["video"].subscribers)
        await eventually(lambda: len(relay.room_info("stall").subscribers) == 1, timeout=30,
                         what="stalled subscriber removed")
    finally:
        await peers.close()


async def test_delete_ends_sessions_and_the_lesson(peers: Peers) -> None:
    teacher, _ = await peers.publish("chem")
    classroom, counters = await peers.subscribe("chem")
    await counters["video"].wait_for(10)
    relay = peers.client.app[RELAY_KEY]
    await classroom.close()
    await eventually(lambda: relay.room_info("chem").subscriber_count == 0)
    await teacher.close()
    await eventually(lambda: relay.rooms.get("chem") is None, what="room discarded")
    assert relay.sessions == {}
    resp = await peers.client.post("/whep/chem", data="v=0\r\n", headers={
        "Content-Type": "application/sdp",
        "Authorization": f"Bearer {peers.token('classroom', 'chem')}"})
    assert resp.status == 409


async def test_api_and_metrics_describe_the_live_room(peers: Peers) -> None:
    await peers.publish("bio")
    subs = [await peers.subscribe("bio") for _ in range(2)]
    for _, counters in subs:
        await counters["video"].wait_for(30)
    admin = peers.token("admin")
    resp = await peers.client.get("/api/rooms", headers={"Authorization": f"Bearer {admin}"})
    assert resp.status == 200
    rooms = (await resp.json())["rooms"]
    assert [r["name"] for r in rooms] == ["bio"]
    assert rooms[0]["live"] is True and rooms[0]["subscriber_count"] == 2
    assert {t["kind"]: t["codec"] for t in rooms[0]["tracks"]} == {
        "audio": "audio/opus", "video": "video/H264"}
    classroom = peers.token("classroom", "bio")
    resp = await peers.client.get("/api/rooms/bio",
                                  headers={"Authorization": f"Bearer {classroom}"})
    assert resp.status == 200 and (await resp.json())["name"] == "bio"

    text = await (await peers.client.get("/metrics")).text()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("classcast_relay_rooms_live", ())] == 1
    assert samples[("classcast_relay_publishers", ())] == 1
    assert samples[("classcast_relay_subscribers", ())] == 2
    assert samples[("classcast_relay_forwarded_packets_total", (("kind", "video"),))] > 60
    assert samples[("classcast_relay_forwarded_bytes_total", (("kind", "audio"),))] > 0
    assert samples[("classcast_relay_keyframe_requests_total", (("reason", "join"),))] >= 1
    assert samples[("classcast_relay_join_latency_seconds_count", ())] == 2
    health = await (await peers.client.get("/healthz")).json()
    assert health["status"] == "ok" and health["rooms"] == 1


async def screen_publisher(peers: Peers, room: str, screen_codec: str = "video/H264"
                           ) -> WhipSession:
    """A teacher with a camera (H264) and a screen: two video m-lines (max-bundle), audio."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[],
                                            bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
    for track, codec in ((PatternVideoTrack(), "video/H264"),
                         (PatternVideoTrack(width=640, height=360, fps=10), screen_codec)):
        caps = [c for c in RTCRtpSender.getCapabilities("video").codecs
                if c.mimeType in (codec, "video/rtx")]
        pc.addTransceiver(track, direction="sendonly").setCodecPreferences(caps)
    pc.addTransceiver(ToneAudioTrack(), direction="sendonly")
    session = WhipSession(peers.url(f"/whip/{room}"), peers.token("teacher", room),
                          ice_addresses=LOOPBACK, pc=pc)
    peers.sessions.append(session)
    await session.start()
    return session


async def screen_subscriber(peers: Peers, room: str) -> tuple[WhipSession, list[FrameCounter]]:
    """A classroom asking for two video lines (camera, screen) and audio, as class.js does."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[],
                                            bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
    for kind in ("video", "video", "audio"):
        pc.addTransceiver(kind, direction="recvonly")
    videos: list[FrameCounter] = []

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        if track.kind == "video":
            videos.append(FrameCounter(track))

    session = WhipSession(peers.url(f"/whep/{room}"), peers.token("classroom", room),
                          ice_addresses=LOOPBACK, pc=pc)
    peers.sessions.append(session)
    await session.start()
    return session, videos


@pytest.mark.parametrize("screen_codec", ["video/H264", "video/VP8"])
async def test_camera_and_screen_reach_classrooms_as_two_video_tracks(
        peers: Peers, screen_codec: str) -> None:
    room = "screen-1"
    relay = peers.client.app[RELAY_KEY]
    # A classroom that joined while only the camera was live has its screen line waiting in
    # the camera's codec: a screen in that codec reaches it as it is, another one makes it
    # rejoin (it reconnects by itself).
    await peers.publish(room)
    _, early_videos = await screen_subscriber(peers, room)
    await eventually(lambda: len(early_videos) == 2, what="the video tracks")
    await early_videos[0].wait_for(10)
    room_now = relay.rooms.get(room)
    assert room_now is not None
    early_session = next(iter(room_now.subscribers.values()))
    assert set(early_session.sent_codecs) == {"audio", "video", "screen"}
    await peers.sessions[0].close()
    await eventually(lambda: not relay.room_info(room).live, what="the camera gone")

    await screen_publisher(peers, room, screen_codec)
    if screen_codec == "video/H264":
        await early_videos[1].wait_for(10)
        assert not early_session.closed
    else:
        await eventually(lambda: early_session.closed, what="the early classroom to rejoin")
        assert early_session.close_cause == "tracks_changed"
    _, videos = await screen_subscriber(peers, room)
    await eventually(lambda: len(videos) == 2, what="two video tracks")
    for counter in videos:
        await counter.wait_for(15)
    assert {size for c in videos for size in c.sizes} == {(320, 240), (640, 360)}
    tracks = {t["slot"]: t for t in dataclasses.asdict(relay.room_info(room))["tracks"]}
    assert tracks["screen"]["live"] and tracks["screen"]["codec"] == screen_codec
    # a classroom that asks for one video line gets the camera only
    _, counters = await peers.subscribe(room)
    await counters["video"].wait_for(15)
    assert set(counters["video"].sizes) == {(320, 240)}
