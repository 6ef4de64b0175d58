"""Real aiortc peers over UDP on loopback, through the WHIP/WHEP endpoints."""

from __future__ import annotations

import pytest

from tests.conftest import Peers


@pytest.mark.parametrize("codec", ["video/H264", "video/VP8"])
async def test_frames_reach_every_subscriber_in_order(peers: Peers, codec: str) -> None:
    await peers.publish("maths-1", codec=codec)
    subs = [await peers.subscribe("maths-1") for _ in range(2)]
    for _, counters in subs:
        while "video" not in counters or "audio" not in counters:
            import asyncio
            await asyncio.sleep(0.05)
        await counters["video"].wait_for(30)
        await counters["audio"].wait_for(50)
        pts = counters["video"].pts
        assert pts == sorted(pts) and len(set(pts)) == len(pts)
