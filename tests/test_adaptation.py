"""Per-classroom levels: the controller's rules, then real peers moved between the full
stream, the low rendition and audio only, by a pin and by the REMB they send."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time

import pytest
from aiortc import RTCRtpReceiver
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, pack_remb_fci
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

from server.adaptation import Level, LevelController, LinkSample, Thresholds
from server.settings import Settings
from server.whipclient import WhipSession
from tests.conftest import Peers, eventually
from tests.media import FrameCounter

FULL_BPS = 1_500_000.0
LOW_BPS = 300_000.0
AUDIO_BPS = 50_000.0
RATES = {Level.FULL: FULL_BPS, Level.LOW: LOW_BPS, Level.AUDIO: AUDIO_BPS}


def controller(**overrides: float) -> LevelController:
    """Warm-up and settling off unless a test is about them: the timelines stay short."""
    thresholds = dataclasses.replace(Thresholds(remb_warmup_s=0, settle_s=0), **overrides)
    return LevelController(RATES.get, thresholds=thresholds)


def feed(c: LevelController, start: float, seconds: int, **sample: float | None
         ) -> list[tuple[float, Level]]:
    """One sample a second; the (time, level) of every change."""
    changes = []
    sample.setdefault("report_age_s", 0.5)  # the classroom reports, unless a test says not
    for n in range(seconds):
        decision = c.update(LinkSample(at=start + n, **sample))  # type: ignore[arg-type]
        if decision is not None:
            changes.append((start + n, decision.level))
    return changes


def test_steps_down_fast_and_up_slowly() -> None:
    c = controller(up_after_s=8)
    # a 150 kbps estimate: congested at full, then at low too; two samples a step
    assert feed(c, 0, 6, remb_bps=150_000, loss=0.0) == [(1, Level.LOW), (3, Level.AUDIO)]
    assert "estimate 150 kbps" in c.reason
    # from audio only the estimate says nothing (too little traffic): after 8 quiet seconds
    # it probes the low level; the link has not recovered, so it falls back, and the next
    # probe waits twice as long
    assert feed(c, 6, 10, remb_bps=150_000, loss=0.0) == [(12, Level.LOW), (14, Level.AUDIO)]
    # the link recovers: low after 16 quiet seconds; once that held for 15 s the wait is 8 s
    # again. The estimate trails what the classroom receives, so it only has to keep climbing
    assert feed(c, 16, 20, remb_bps=400_000, loss=0.0) == [(31, Level.LOW)]
    climbing = [c.update(LinkSample(at=36 + n, remb_bps=400_000 * 1.05 ** n, loss=0.0,
                                    report_age_s=0.5)) for n in range(12)]
    assert [(36 + n, d.level) for n, d in enumerate(climbing) if d] == [(46, Level.FULL)]
    # at full, an estimate well below what is sent that stops climbing is congestion
    assert feed(c, 52, 3, remb_bps=600_000, loss=0.0) == [(52, Level.LOW)]  # t = 47 too
    # but 0.85x what is sent (a receiver's answer to one queue) is not
    c = controller()
    assert feed(c, 0, 10, remb_bps=0.85 * FULL_BPS, loss=0.0) == []


def test_loss_and_nacks_mean_congestion_and_a_failed_probe_waits_longer() -> None:
    c = controller(up_after_s=4)
    assert feed(c, 0, 2, loss=0.12) == [(1, Level.LOW)]
    assert c.reason == "loss 12%"
    # after a step down the averages start again: clean enough for full from t = 2
    assert feed(c, 2, 8, loss=0.0) == [(6, Level.FULL)]
    assert feed(c, 10, 2, nack_ratio=0.3) == [(11, Level.LOW)]  # the probe failed
    assert "asked for again" in c.reason
    # the next probe waits twice as long (8 s)
    assert feed(c, 12, 14, loss=0.0, nack_ratio=0.0) == [(20, Level.FULL)]


def test_random_loss_keeps_the_low_rendition_and_only_far_worse_means_audio() -> None:
    """A rural link that loses 5 % at random whatever is sent: the low rendition is for it."""
    c = controller(up_after_s=4)
    noise = [0.03, 0.09, 0.05, 0.08, 0.02, 0.07, 0.04, 0.09, 0.06, 0.03]
    assert feed(c, 0, 2, loss=0.5) == [(1, Level.LOW)]
    changes = [c.update(LinkSample(at=2 + n, loss=noise[n % len(noise)], report_age_s=0.5))
               for n in range(40)]
    assert not any(changes) and c.level == Level.LOW  # never audio, never full
    assert feed(c, 42, 2, loss=0.5) == [(43, Level.AUDIO)]
    # sound only; the link comes back to its 5 %: the low rendition again, not full
    assert feed(c, 44, 30, loss=0.05) == [(48, Level.LOW)]
    assert c.level == Level.LOW


def test_a_pin_is_a_ceiling_and_bogus_or_missing_feedback_changes_nothing() -> None:
    c = controller(up_after_s=2)
    for remb in (0.0, -5.0, 1e12, None):  # absurd or no estimate, no reports
        assert feed(c, 0, 5, remb_bps=remb) == []
    assert c.level == Level.FULL
    decision = c.pin(Level.LOW, now=10)
    assert decision is not None and decision.level == Level.LOW
    assert feed(c, 11, 10, loss=0.0, remb_bps=5e6) == []  # never above the pin
    assert feed(c, 21, 2, loss=0.5) == [(22, Level.AUDIO)]  # but lower if the link says so
    assert c.pin(None, now=30) is None
    assert feed(c, 30, 10, loss=0.0) == [(32, Level.LOW), (35, Level.FULL)]


def test_after_a_step_down_the_old_levels_reports_are_not_held_against_the_new_one() -> None:
    c = controller(settle_s=2)
    assert feed(c, 0, 2, loss=0.6) == [(1, Level.LOW)]
    # the next reports still describe the full stream's losses: not the low rendition's
    assert feed(c, 2, 1, loss=0.5) == []
    assert feed(c, 3, 10, loss=0.05) == []  # then the low rendition's own: it holds
    assert c.level == Level.LOW


def test_a_classroom_that_sends_no_reports_is_moved_down() -> None:
    """A broken client (or a link that loses all it sends) must not keep the full stream on a
    school uplink it may share: after 5 s without receiver reports it goes down a level at a
    time, and stays there while it says nothing."""
    c = controller()
    assert feed(c, 0, 12, report_age_s=None) == [(6, Level.LOW), (8, Level.AUDIO)]
    assert "no receiver reports" in c.reason
    c = controller()
    assert feed(c, 0, 4, report_age_s=0.5) == []
    assert feed(c, 4, 8, report_age_s=6.0) == [(5, Level.LOW), (7, Level.AUDIO)]


def test_no_probe_of_the_full_stream_without_room_for_it() -> None:
    """On a 300 kbit/s link the low rendition fits and the estimate stops climbing near the
    link's rate: no probe of the full stream, however clean the loss looks."""
    c = controller(up_after_s=2)
    c.pin(Level.LOW, now=0)
    c.pin(None, now=0)
    assert feed(c, 1, 20, loss=0.0, remb_bps=375_000) == []  # < 1.4 x 300 k sent
    assert feed(c, 21, 5, loss=0.0, remb_bps=FULL_BPS) == [(21, Level.FULL)]  # quiet long since


def test_the_estimate_is_not_believed_while_it_warms_up() -> None:
    c = controller(remb_warmup_s=5)
    assert feed(c, 0, 5, remb_bps=100_000) == []
    assert feed(c, 5, 2, remb_bps=100_000) == [(6, Level.LOW)]


def test_a_level_without_a_rendition_is_skipped() -> None:
    c = LevelController(RATES.get, available=lambda level: level != Level.LOW,
                        thresholds=Thresholds(remb_warmup_s=0))
    assert feed(c, 0, 2, loss=0.5) == [(1, Level.AUDIO)]


# --- real peers -------------------------------------------------------------------------------
@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Quicker steps up than production's 8 s, so the test can watch a classroom climb."""
    relay = dataclasses.replace(settings.relay, adapt_up_after_s=1.0, adapt_interval_s=0.5)
    return dataclasses.replace(settings, relay=relay)


def level_url(session: WhipSession) -> str:
    assert session.location is not None
    return URL(session.location).path + "/level"


async def level(peers: Peers, session: WhipSession) -> dict[str, object]:
    resp = await peers.client.get(level_url(session),
                                  headers={"Authorization": f"Bearer {session.token}"})
    assert resp.status == 200, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


async def pin(peers: Peers, session: WhipSession, value: str | None) -> int:
    resp = await peers.client.put(level_url(session), json={"pin": value},
                                  headers={"Authorization": f"Bearer {session.token}"})
    return resp.status


async def metric(peers: Peers, name: str, **labels: str) -> float:
    text = await (await peers.client.get("/metrics")).text()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def frames_at(counter: FrameCounter, size: tuple[int, int]) -> int:
    return sum(1 for s in counter.sizes if s == size)


async def test_a_classroom_moves_between_full_low_and_audio(peers: Peers) -> None:
    await peers.publish("adapt", size=(640, 480))
    weak, weak_frames = await peers.subscribe("adapt")
    _, clean_frames = await peers.subscribe("adapt")
    await eventually(lambda: frames_at(weak_frames["video"], (640, 480)) > 5, what="full")
    # the classroom pins 低流量模式: the low rendition, 360 lines, on the same timeline
    assert await pin(peers, weak, "low") == 200
    await eventually(lambda: frames_at(weak_frames["video"], (480, 360)) > 10, timeout=20,
                     what="low rendition frames")
    info = await level(peers, weak)
    assert (info["level"], info["pinned"]) == ("low", "low")
    pts = weak_frames["video"].pts
    assert all(b > a for a, b in itertools.pairwise(pts)), "timestamps went back"
    room = await (await peers.client.get(
        "/api/rooms/adapt", headers={"Authorization": f"Bearer {peers.token('admin')}"})).json()
    levels = {s["id"]: s["level"]["level"] for s in room["subscribers"]}
    assert sorted(levels.values()) == ["full", "low"]
    assert await metric(peers, "classcast_relay_classrooms_by_level", level="low") == 1
    assert await metric(peers, "classcast_relay_low_renditions") == 1
    assert await metric(peers, "classcast_relay_low_rendition_cpu_seconds_total") > 0
    # the other classroom kept the full stream
    before = frames_at(clean_frames["video"], (640, 480))
    await eventually(lambda: frames_at(clean_frames["video"], (640, 480)) > before + 20,
                     what="full frames at the clean classroom")
    assert frames_at(clean_frames["video"], (480, 360)) == 0
    # audio only: video stops, audio goes on
    assert await pin(peers, weak, "audio") == 200
    await eventually(lambda: _stalled(weak_frames["video"]), what="video to stop")
    audio_before = len(weak_frames["audio"].pts)
    video_before = len(weak_frames["video"].pts)
    await eventually(lambda: len(weak_frames["audio"].pts) > audio_before + 50, what="audio")
    assert len(weak_frames["video"].pts) <= video_before + 1
    # unpinned: back up by itself, a level at a time, after the quiet period
    full_before = frames_at(weak_frames["video"], (640, 480))
    assert await pin(peers, weak, None) == 200
    await eventually(lambda: frames_at(weak_frames["video"], (640, 480)) > full_before + 10,
                     timeout=30, what="full stream again")
    assert (await level(peers, weak))["level"] == "full"
    assert await metric(peers, "classcast_relay_level_changes_total") >= 4
    # bad pins
    assert await pin(peers, weak, "ultra") == 400
    resp = await peers.client.put(level_url(weak), data=b"{",
                                  headers={"Authorization": f"Bearer {weak.token}"})
    assert resp.status == 400


def _stalled(counter: FrameCounter) -> bool:
    return bool(counter.arrivals) and time.monotonic() - counter.arrivals[-1] > 1.0


def _silence_own_remb(session: WhipSession) -> RTCRtpReceiver:
    """aiortc's receiver sends its own REMB estimates; the test speaks for it instead."""
    receiver = next(t.receiver for t in session.pc.getTransceivers() if t.kind == "video")
    receiver._RTCRtpReceiver__remote_bitrate_estimator = None  # type: ignore[attr-defined]
    return receiver


async def _send_remb(receiver: RTCRtpReceiver, bps: int) -> None:
    streams = receiver._RTCRtpReceiver__remote_streams  # type: ignore[attr-defined]
    media = list(streams)
    await receiver._send_rtcp(RtcpPsfbPacket(  # type: ignore[attr-defined]
        fmt=RTCP_PSFB_APP, ssrc=receiver._RTCRtpReceiver__rtcp_ssrc,  # type: ignore[attr-defined]
        media_ssrc=0, fci=pack_remb_fci(bps, media)))


async def test_remb_moves_a_classroom_down_and_bogus_remb_does_not(peers: Peers) -> None:
    await peers.publish("remb", size=(640, 480))
    session, frames = await peers.subscribe("remb")
    receiver = _silence_own_remb(session)
    await eventually(lambda: len(frames["video"].pts) > 10, what="frames")
    # garbage estimates for 7 s (past the warm-up): believed by nobody
    for _ in range(14):
        await _send_remb(receiver, 0)
        await _send_remb(receiver, 2**40)  # far beyond any link
        await _tick(0.5)
    assert (await level(peers, session))["level"] == "full"
    # an estimate of 120 kbit/s: below full, then below low: audio only
    for _ in range(30):
        await _send_remb(receiver, 120_000)
        if (await level(peers, session))["level"] == "audio":
            break
        await _tick(0.5)
    info = await level(peers, session)
    assert info["level"] == "audio" and "estimate 120 kbps" in str(info["reason"])
    assert await metric(peers, "classcast_relay_level_changes_total", level="low") == 1
    assert await metric(peers, "classcast_relay_level_changes_total", level="audio") == 1


async def _tick(seconds: float) -> None:
    await asyncio.sleep(seconds)  # the controller samples on a clock: feedback is paced
