"""NACK handling: repeats within the RTT are not resent, a flood is capped, others unharmed."""

from __future__ import annotations

import asyncio

from aiortc import RTCRtpReceiver
from prometheus_client.parser import text_string_to_metric_families

from server.retransmit import RetransmitPolicy
from server.whipclient import WhipSession
from tests.conftest import Peers, eventually


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_sequence_number_is_resent_once_per_rtt() -> None:
    clock = Clock()
    policy = RetransmitPolicy(min_interval_s=0.1, budget_per_s=1000, clock=clock)
    assert policy.allow(7, rtt_s=None)
    clock.now += 0.05
    assert not policy.allow(7, rtt_s=None)  # the first resend cannot have arrived yet
    assert policy.allow(8, rtt_s=None)  # other numbers are unaffected
    clock.now += 0.06
    assert policy.allow(7, rtt_s=None)  # 110 ms later: lost again, resend
    clock.now += 0.2
    assert not policy.allow(7, rtt_s=0.3)  # a long round trip widens the window
    clock.now += 0.11
    assert policy.allow(7, rtt_s=0.3)
    assert policy.counts == {"sent": 4, "duplicate": 2, "over_budget": 0, "unavailable": 0}


def test_a_flood_is_capped_by_a_refilling_budget() -> None:
    clock = Clock()
    policy = RetransmitPolicy(budget_per_s=100, clock=clock)
    allowed = sum(policy.allow(seq, None) for seq in range(1000))
    assert not policy.allow(5000, None, available=False)  # gone from history: not counted
    assert policy.counts["unavailable"] == 1
    assert allowed == 100 and policy.counts["over_budget"] == 900
    clock.now += 0.5  # half a second refills half the budget
    assert sum(policy.allow(seq, None) for seq in range(1000, 1200)) == 50


async def send_nack(receiver: RTCRtpReceiver, ssrc: int, seqs: list[int]) -> None:
    """NACK `seqs` (consecutive, may wrap past 65535): one packet per ascending run, as
    aiortc packs a list only in ascending order."""
    runs: list[list[int]] = []
    for seq in seqs:
        if runs and seq > runs[-1][-1]:
            runs[-1].append(seq)
        else:
            runs.append([seq])
    for run in runs:
        await receiver._send_rtcp_nack(ssrc, run)


def video_receiver(session: WhipSession) -> RTCRtpReceiver:
    return next(t.receiver for t in session.pc.getTransceivers() if t.kind == "video")


async def retransmissions(peers: Peers) -> dict[str, float]:
    text = await (await peers.client.get("/metrics")).text()
    return {s.labels["outcome"]: s.value for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == "classcast_relay_retransmissions_total"}


async def test_repeated_and_flooding_nacks_over_real_peers(peers: Peers) -> None:
    await peers.publish("nack")
    flooder, _ = await peers.subscribe("nack")
    _, healthy = await peers.subscribe("nack")
    receiver = video_receiver(flooder)
    streams = receiver._RTCRtpReceiver__remote_streams  # type: ignore[attr-defined]
    await eventually(lambda: bool(streams), what="video RTP at the flooder")
    ssrc, stats = next(iter(streams.items()))
    recent = stats.max_seq
    # the same packet asked for five times at once: resent once
    for _ in range(5):
        await send_nack(receiver, ssrc, [recent])
    counts: dict[str, float] = {}

    async def reach(expected: dict[str, float]) -> None:
        """Scrape /metrics until the counters reach `expected` (bounded)."""
        for _ in range(500):
            counts.update(await retransmissions(peers))
            if all(counts.get(k, 0) >= v for k, v in expected.items()):
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"retransmission counters {counts} never reached {expected}")

    await reach({"sent": 1, "duplicate": 4})
    assert counts.get("sent") == 1 and counts.get("duplicate") == 4
    # a flood of 2 000 old sequence numbers: nothing to resend for those the sender no
    # longer keeps (its history is 128 packets), and they do not spend the budget
    frames_before = len(healthy["video"].pts)
    for start in range(0, 2000, 100):
        await send_nack(receiver, ssrc, [(recent - 2000 + n) & 0xFFFF
                                         for n in range(start, start + 100)])
    await reach({"unavailable": 1800})
    assert counts["sent"] <= 1 + 128 and counts.get("over_budget", 0) == 0
    # a flood of packets it does keep, asked again every 120 ms (past the 100 ms window):
    # about 1 000 requests in 1.2 s, of which the budget (200 + 200/s) answers about 440
    sent_before = counts["sent"]
    await healthy["video"].wait_for(150)  # the sender now keeps 128 packets to resend
    for _ in range(10):
        newest = stats.max_seq
        await send_nack(receiver, ssrc, [(newest - 99 + n) & 0xFFFF for n in range(100)])
        await asyncio.sleep(0.12)  # the flood's pace, not a wait for the server
    await reach({"over_budget": 300})
    assert counts["sent"] - sent_before <= 200 + 200 * 1.5
    # the other classroom kept getting frames, and the flooder is still served
    await eventually(lambda: len(healthy["video"].pts) > frames_before + 20,
                     what="frames at the healthy classroom")
    assert flooder.pc.connectionState == "connected"
