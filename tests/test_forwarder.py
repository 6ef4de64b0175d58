"""Unit tests of fan-out logic: keyframe gating, bounded queues, timestamp continuity and
rate-limited keyframe requests (real-peer behaviour is in test_relay.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from server.forwarder import RoomTrack
from server.passthrough import EncodedFrame

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
KEY, DELTA = b"\x10\x00", b"\x11\x00"


def frame(ts: int, key: bool) -> EncodedFrame:
    return EncodedFrame(KEY if key else DELTA, ts, key, time.monotonic())


async def test_subscriber_starts_at_a_keyframe_and_slow_ones_are_bounded() -> None:
    requests: list[float] = []

    async def keyframe() -> None:
        requests.append(time.monotonic())

    track = RoomTrack("video", video_queue=5, keyframe_interval_s=0.05)
    generation = track.attach_source(VP8, keyframe)
    sub = track.subscribe()
    track.push(frame(0, False), generation)  # held back: no keyframe yet
    track.push(frame(3000, True), generation)
    track.push(frame(6000, False), generation)
    assert sub.queued == 2
    first = await sub.recv()
    assert first.frame.keyframe and sub.first_frame_keyframe
    for i in range(10):  # nobody drains: the queue overflows, empties, waits for a keyframe
        track.push(frame(9000 + i * 3000, False), generation)
    assert sub.queued <= 5
    track.push(frame(99000, True), generation)
    assert (await sub.recv()).frame.timestamp == 99000
    # join and slow-subscriber requests made in one go are coalesced into one PLI
    await asyncio.wait_for(_until(lambda: len(requests) == 1), 2)
    await track.close()


async def test_timestamps_continue_across_publisher_sessions() -> None:
    async def keyframe() -> None:
        pass

    track = RoomTrack("video", keyframe_interval_s=10)
    g1 = track.attach_source(VP8, keyframe)
    sub = track.subscribe()
    t0 = 100.0
    track.push(EncodedFrame(KEY, 0, True, t0), g1)
    track.push(EncodedFrame(DELTA, 3000, False, t0 + 1 / 30), g1)
    out = [sub.pack(await sub.recv())[1] for _ in range(2)]
    track.detach_source(g1)
    g2 = track.attach_source(VP8, keyframe)  # the teacher is back 2 s later: timestamps restart
    track.push(EncodedFrame(KEY, 0, True, t0 + 2 + 1 / 30), g2)
    track.push(frame(123, False), g1)  # a straggler from the old session is ignored
    track.push(EncodedFrame(DELTA, 3000, False, t0 + 2 + 2 / 30), g2)
    out += [sub.pack(await sub.recv())[1] for _ in range(2)]
    # the timeline goes on by the 2 s the teacher was away, then at the source's pace
    assert out == [0, 3000, 3000 + 180000, 3000 + 183000]
    await track.close()


async def test_keyframe_requests_are_rate_limited_but_never_lost() -> None:
    sent: list[float] = []

    async def keyframe() -> None:
        sent.append(time.monotonic())

    track = RoomTrack("video", keyframe_interval_s=0.2)
    track.attach_source(VP8, keyframe)
    for _ in range(20):
        track.request_keyframe("subscriber")
    await asyncio.wait_for(_until(lambda: len(sent) == 1), 2)
    track.request_keyframe("subscriber")
    await asyncio.wait_for(_until(lambda: len(sent) == 2), 2)
    assert sent[1] - sent[0] >= 0.19
    await track.close()


async def _until(predicate: Callable[[], bool]) -> None:
    while not predicate():
        await asyncio.sleep(0.01)
