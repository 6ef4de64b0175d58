"""Bad input at the WHIP/WHEP endpoints: the right 4xx with a JSON message, no leaked peer,
and the live room keeps serving its classrooms throughout."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from server import ice, sdp
from server.keys import RELAY_KEY
from tests.conftest import LOOPBACK, Peers, eventually
from tests.media import FrameCounter


async def make_offer(*directions_kinds: tuple[str, str]) -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    for kind, direction in directions_kinds:
        pc.addTransceiver(kind, direction=direction)
    with ice.host_addresses(LOOPBACK):
        await pc.setLocalDescription(await pc.createOffer())
    sdp = str(pc.localDescription.sdp)
    await pc.close()
    return sdp


@pytest.fixture
async def live(peers: Peers) -> AsyncIterator[FrameCounter]:
    """A live lesson in room 'live' with one classroom watching."""
    await peers.publish("live")
    _, counters = await peers.subscribe("live")
    await counters["video"].wait_for(5)
    yield counters["video"]


async def expect_error(peers: Peers, method: str, path: str, status: int, *,
                       body: str | bytes = "", content_type: str = "application/sdp",
                       token: str | None = "teacher", headers: dict[str, str] | None = None
                       ) -> dict[str, str]:
    hdrs = {"Content-Type": content_type, **(headers or {})}
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    resp = await peers.client.request(method, path, data=body, headers=hdrs)
    payload = await resp.json()
    assert resp.status == status, payload
    assert set(payload) == {"error", "message"} and payload["message"]
    return dict(resp.headers)


async def assert_still_serving(peers: Peers, counter: FrameCounter) -> None:
    relay = peers.client.app[RELAY_KEY]
    assert len(relay.sessions) == 2, "a rejected request left a peer session behind"
    info = relay.room_info("live")
    assert info.live and info.subscriber_count == 1
    assert all(t.subscribers == 1 for t in info.tracks), "a rejected classroom left a track"
    await counter.wait_for(counter.count + 10)


async def test_whip_rejects_bad_offers(peers: Peers, live: FrameCounter) -> None:
    teacher = peers.token("teacher", "spare")
    send = await make_offer(("audio", "sendonly"), ("video", "sendonly"))
    cases: list[tuple[str, int, str]] = [
        ("", 400, "application/sdp"),
        ("hello, this is not SDP", 400, "application/sdp"),
        ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n", 400, "application/sdp"),
        (send.replace("a=ice-ufrag", "a=x-ufrag"), 400, "application/sdp"),
        (send, 415, "text/plain"),
        (send, 415, "application/json"),
        ("v=0\r\n" + "a=x\r\n" * 20000, 413, "application/sdp"),
        (await make_offer(("video", "recvonly")), 422, "application/sdp"),
        (await make_offer(*[("video", "sendonly")] * 3), 422, "application/sdp"),
        (send.replace("H264", "H265").replace("VP8", "AV1X"), 422, "application/sdp"),
    ]
    for body, status, ctype in cases:
        headers = await expect_error(peers, "POST", "/whip/spare", status, body=body,
                                     content_type=ctype, token=teacher)
        if status == 415:
            assert headers["Accept-Post"] == "application/sdp"
    await assert_still_serving(peers, live)


async def test_whip_and_whep_check_tokens(peers: Peers, live: FrameCounter) -> None:
    send = await make_offer(("audio", "sendonly"), ("video", "sendonly"))
    recv = await make_offer(("audio", "recvonly"), ("video", "recvonly"))
    issuer_token = peers.token
    expired = issuer_token("teacher", "live", ttl_s=-10)
    cases = [
        ("/whip/spare", send, None, 401),
        ("/whip/spare", send, "not-a-jwt", 401),
        ("/whip/spare", send, expired, 401),
        ("/whip/spare", send, issuer_token("classroom", "spare"), 403),
        ("/whip/spare", send, issuer_token("teacher", "other-room"), 403),
        ("/whip/live", send, issuer_token("teacher", "live", subject="t2"), 409),  # 2nd teacher
        ("/whep/live", recv, None, 401),
        ("/whep/live", recv, issuer_token("classroom", "other-room"), 403),
    ]
    for path, body, token, status in cases:
        await expect_error(peers, "POST", path, status, body=body, token=token)
    resp = await peers.client.post("/whip/spare", data=send, headers={
        "Content-Type": "application/sdp", "Authorization": "Basic dXNlcjpwdw=="})
    assert resp.status == 401
    await assert_still_serving(peers, live)


async def test_whep_before_the_lesson_says_retry_after(peers: Peers) -> None:
    recv = await make_offer(("audio", "recvonly"), ("video", "recvonly"))
    headers = await expect_error(peers, "POST", "/whep/not-yet", 409, body=recv,
                                 token=peers.token("classroom", "not-yet"))
    assert int(headers["Retry-After"]) > 0


async def test_whep_rejects_offers_it_cannot_play(peers: Peers, live: FrameCounter) -> None:
    classroom = peers.token("classroom", "live")
    send = await make_offer(("video", "sendonly"))
    await expect_error(peers, "POST", "/whep/live", 422, body=send, token=classroom)
    vp8_only = (await make_offer(("video", "recvonly"))).replace("H264", "H999")
    await expect_error(peers, "POST", "/whep/live", 422, body=vp8_only.replace(
        "VP8", "VP9X"), token=classroom)
    await assert_still_serving(peers, live)


async def test_session_resources(peers: Peers, live: FrameCounter) -> None:
    classroom = peers.token("classroom", "live")
    teacher = peers.token("teacher", "live")
    missing = "/whep/live/00000000000000000000000000000000"
    await expect_error(peers, "DELETE", missing, 404, token=classroom)
    await expect_error(peers, "PATCH", missing, 404, token=classroom,
                       content_type="application/trickle-ice-sdpfrag",
                       body="a=end-of-candidates\r\n")
    relay = peers.client.app[RELAY_KEY]
    sub_id = next(iter(relay.room_info("live").subscribers)).id
    pub_id = relay.room_info("live").publishers[0].id
    # the publisher's resource is not reachable through WHEP, nor with a classroom token
    await expect_error(peers, "DELETE", f"/whep/live/{pub_id}", 404, token=classroom)
    await expect_error(peers, "DELETE", f"/whip/live/{pub_id}", 403, token=classroom)
    path = f"/whep/live/{sub_id}"
    await expect_error(peers, "PATCH", path, 415, token=classroom, body="a=end-of-candidates",
                       content_type="application/sdp")
    await expect_error(peers, "PATCH", path, 422, token=classroom, body="a=end-of-candidates",
                       content_type="application/trickle-ice-sdpfrag",
                       headers={"If-Match": "*"})
    await expect_error(peers, "PATCH", path, 422, token=classroom,
                       content_type="application/trickle-ice-sdpfrag",
                       body="a=ice-ufrag:zzzz\r\na=ice-pwd:yyyyyyyyyyyyyyyyyyyyyyyy\r\n")
    resp = await peers.client.patch(path, data=(
        "a=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\n"
        "a=candidate:garbage\r\n"), headers={
        "Content-Type": "application/trickle-ice-sdpfrag", "Authorization": f"Bearer {classroom}"})
    assert resp.status == 204
    resp = await peers.client.options("/whip/live")
    assert resp.status == 204 and resp.headers["Accept-Post"] == "application/sdp"
    assert "Location" in resp.headers["Access-Control-Expose-Headers"]
    await expect_error(peers, "POST", "/whip/bad%20room!", 404, token=teacher,
                       body=await make_offer(("video", "sendonly")))
    await assert_still_serving(peers, live)


async def test_a_full_server_says_503_with_retry_after(peers: Peers, live: FrameCounter) -> None:
    relay = peers.client.app[RELAY_KEY]
    relay._settings = dataclasses.replace(relay._settings, relay=dataclasses.replace(
        relay._settings.relay, max_subscribers=1))
    recv = await make_offer(("audio", "recvonly"), ("video", "recvonly"))
    headers = await expect_error(peers, "POST", "/whep/live", 503, body=recv,
                                 token=peers.token("classroom", "live"))
    assert int(headers["Retry-After"]) > 0
    await assert_still_serving(peers, live)


CHROMIUM_BUNDLED_OFFER = "\r\n".join([
    "v=0", "o=- 1 2 IN IP4 127.0.0.1", "s=-", "t=0 0", "a=group:BUNDLE 0 1 2",
    "m=video 50000 UDP/TLS/RTP/SAVPF 96", "a=mid:0",
    "a=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host", "a=end-of-candidates",
    "m=video 9 UDP/TLS/RTP/SAVPF 96", "a=mid:1", "a=end-of-candidates",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111", "a=mid:2", "a=end-of-candidates",
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel", "a=mid:3", ""])


def test_bundled_sections_get_the_first_sections_candidates() -> None:
    """Chromium puts candidates in the first bundled m-section only; aiortc reads a shared
    transport's candidates from its last m-section, so every bundled one needs them."""
    fixed = sdp.with_bundled_candidates(CHROMIUM_BUNDLED_OFFER)
    sections = fixed.split("\r\nm=")
    for section in sections[1:4]:
        assert section.count("a=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host") == 1
        assert section.count("a=end-of-candidates") == 1
    assert "a=candidate" not in sections[4]  # mid 3 is not in the BUNDLE group
    assert fixed.endswith("\r\n")
    # offers that need nothing are left as they are
    assert sdp.with_bundled_candidates(fixed) == fixed
    unbundled = CHROMIUM_BUNDLED_OFFER.replace("a=group:BUNDLE 0 1 2\r\n", "")
    assert sdp.with_bundled_candidates(unbundled) == unbundled


MDNS = "0d3c6a1e-7b7f-4b8e-9f3a-2c1d5e6f7a8b.local"


def test_mdns_candidates_are_dropped_and_other_candidates_kept() -> None:
    offer = ("v=0\r\ns=-\r\nt=0 0\r\n"
             "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\n"
             f"a=candidate:1 1 udp 2130706431 {MDNS} 50000 typ host\r\n"
             "a=candidate:2 1 udp 1694498815 203.0.113.7 50000 typ srflx raddr 0.0.0.0 rport 0\r\n"
             "a=end-of-candidates\r\n"
             "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\n"
             f"a=candidate:1 1 udp 2130706431 {MDNS.upper()} 50001 typ host\r\n"
             "a=end-of-candidates\r\n")
    out = sdp.without_mdns_candidates(offer)
    video, audio = out.split("\r\nm=")[1:]
    assert ".local" not in out.lower()
    assert "203.0.113.7" in video and "a=end-of-candidates" in video  # still complete
    assert "a=candidate" not in audio and "a=end-of-candidates" not in audio


async def test_a_classroom_offering_only_mdns_candidates_connects_and_plays(
        peers: Peers) -> None:
    """Chromium hides host addresses behind `<uuid>.local` names on a page that is neither on
    loopback nor allowed the camera: a classroom screen on a school network. The relay must
    still answer with its candidates and learn the classroom's address from its checks."""
    await peers.publish("mdns")
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    counters: dict[str, FrameCounter] = {}
    pc.on("track", lambda track: counters.setdefault(track.kind, FrameCounter(track)))
    try:
        with ice.host_addresses(LOOPBACK):
            await pc.setLocalDescription(await pc.createOffer())
        offer = re.sub(r"(a=candidate:\S+ \d \w+ \d+ )127\.0\.0\.1", rf"\g<1>{MDNS}",
                       pc.localDescription.sdp)
        assert MDNS in offer and "127.0.0.1 " not in offer
        resp = await peers.client.post("/whep/mdns", data=offer, headers={
            "Content-Type": "application/sdp",
            "Authorization": f"Bearer {peers.token('classroom', 'mdns')}"})
        answer = await resp.text()
        assert resp.status == 201 and "a=candidate:" in answer
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        await eventually(lambda: "video" in counters, what="the video track")
        await counters["video"].wait_for(30)
    finally:
        await pc.close()
