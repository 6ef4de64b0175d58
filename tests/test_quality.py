"""server.quality: link samples of real aiortc classrooms, from the relay's own senders."""

from __future__ import annotations

import asyncio

from server.keys import RELAY_KEY
from server.quality import LinkQuality, sample_link
from server.sessions import PeerSession
from tests.conftest import Peers


async def test_a_classroom_link_has_rtt_loss_jitter_and_bitrate(peers: Peers) -> None:
    await peers.publish("quality-1")
    _, counters = await peers.subscribe("quality-1")
    await counters["video"].wait_for(10)
    room = peers.client.app[RELAY_KEY].rooms.get("quality-1")
    assert room is not None
    (session,) = room.subscribers.values()

    first = await sample_link(session)
    assert first.kbps is None  # a bitrate needs a previous sample
    assert first.bytes_sent > 0
    samples: list[LinkQuality] = [first]

    # aiortc's receiver sends a receiver report about every second; the RTT needs one that
    # echoes a sender report. Poll (bounded) until a sample has it.
    deadline = asyncio.get_running_loop().time() + 15
    while samples[-1].rtt_ms is None:
        assert asyncio.get_running_loop().time() < deadline, "no round-trip time in 15 s"
        await asyncio.sleep(0.25)
        samples.append(await sample_link(session, samples[-1]))
    last = samples[-1]
    assert 0 <= last.rtt_ms < 200  # type: ignore[operator]  # loopback
    assert last.loss == 0.0 and last.packets_lost == 0
    assert last.jitter_ms is not None and last.jitter_ms >= 0
    assert last.kbps is not None and last.kbps > 50  # 320x240 pattern + Opus tone
    assert last.bytes_sent > first.bytes_sent


async def test_a_session_that_sends_nothing_has_no_quality_yet(peers: Peers) -> None:
    await peers.publish("quality-2")
    room = peers.client.app[RELAY_KEY].rooms.get("quality-2")
    assert room is not None
    publisher: PeerSession = room.publishers[0]
    sample = await sample_link(publisher)
    assert sample == LinkQuality(None, None, None, None, 0, 0, sample.sampled_at)
