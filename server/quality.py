"""Link quality of one peer session, as the relay sees it from its own senders.

aiortc turns each receiver report a classroom sends into `remote-inbound-rtp` stats on the
matching `RTCRtpSender` (round-trip time, fraction lost, jitter in RTP clock units) and counts
what it sent in `outbound-rtp` (DESIGN.md §5). `sample_link` reads both; the bitrate needs two
samples, so each sample carries its byte count and time and the next call is given the previous
one. No state is kept here: the caller owns its previous samples (e.g. one per session).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from server.sessions import PeerSession

# RTP clock rates for jitter: video is always 90 kHz; audio is Opus (48 kHz) unless the
# negotiated codec says otherwise.
VIDEO_CLOCK_HZ = 90_000
AUDIO_CLOCK_HZ = 48_000


@dataclass(frozen=True)
class LinkQuality:
    """One sample of a session's link. None: not known yet (no receiver report so far, or no
    previous sample to take a bitrate against)."""

    rtt_ms: float | None  # round-trip time, smoothed by aiortc
    loss: float | None  # fraction of packets lost since the peer's previous report, 0..1
    jitter_ms: float | None  # interarrival jitter the peer reports
    kbps: float | None  # bitrate sent to the peer since the previous sample
    packets_lost: int  # cumulative, as the peer reports it
    bytes_sent: int  # cumulative: what the next sample's bitrate is taken against
    sampled_at: float  # time.monotonic() of this sample
    report_age_s: float | None = None  # since the peer's latest receiver report (None: none)


@dataclass(frozen=True)
class _Report:
    kind: str
    rtt_s: float | None
    fraction_lost: float
    jitter_units: float
    packets_lost: int
    clock_hz: int
    at: float  # wall-clock time it arrived


async def sample_link(session: PeerSession, previous: LinkQuality | None = None) -> LinkQuality:
    """Sample what the relay sends to `session` (a classroom, or any peer it sends to).

    Round-trip time, loss and jitter come from the video stream's latest receiver report when
    there is one (it carries most packets), else from the audio stream's."""
    now = time.monotonic()
    bytes_sent = 0
    reports: list[_Report] = []
    for transceiver in session.pc.getTransceivers():
        sender = transceiver.sender
        if sender is None or sender.track is None:
            continue
        clock = VIDEO_CLOCK_HZ if transceiver.kind == "video" else _audio_clock(transceiver)
        stats = await sender.getStats()
        for item in stats.values():
            if item.type == "outbound-rtp":
                bytes_sent += int(item.bytesSent)
            elif item.type == "remote-inbound-rtp":
                reports.append(_Report(transceiver.kind, item.roundTripTime,
                                       float(item.fractionLost), float(item.jitter),
                                       int(item.packetsLost), clock,
                                       item.timestamp.timestamp()))
    kbps = None
    if previous is not None and now > previous.sampled_at and bytes_sent >= previous.bytes_sent:
        kbps = round((bytes_sent - previous.bytes_sent) * 8 / (now - previous.sampled_at) / 1000,
                     1)
    report = next((r for r in reports if r.kind == "video"), reports[0] if reports else None)
    if report is None:
        return LinkQuality(None, None, None, kbps, 0, bytes_sent, now)
    return LinkQuality(
        rtt_ms=None if report.rtt_s is None else round(report.rtt_s * 1000, 1),
        loss=round(report.fraction_lost / 256, 4),  # RTCP's 8-bit fixed point fraction
        jitter_ms=round(report.jitter_units * 1000 / report.clock_hz, 1),
        kbps=kbps, packets_lost=sum(r.packets_lost for r in reports), bytes_sent=bytes_sent,
        sampled_at=now, report_age_s=round(time.time() - max(r.at for r in reports), 2))


def _audio_clock(transceiver: object) -> int:
    """The negotiated audio clock rate (aiortc keeps the codecs on the transceiver)."""
    codecs = getattr(transceiver, "_codecs", None) or []
    for codec in codecs:
        rate = getattr(codec, "clockRate", None)
        if isinstance(rate, int) and rate > 0:
            return rate
    return AUDIO_CLOCK_HZ
