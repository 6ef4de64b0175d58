"""Encoded frames → plain RTP over loopback UDP to ffmpeg.

No RTCP: ffmpeg's RTP demuxer then starts each stream's clock at its first packet, and the
recording starts every stream at the same moment (see `Recording.feed`). Sender reports
would re-base timestamps mid-stream, and the first packets read before a report get another
base, which put a 0.86 s hole after the first keyframe in early tests.
"""

from __future__ import annotations

import asyncio
import fractions
import random
import socket
from dataclasses import dataclass
from typing import Protocol

import av
from aiortc.codecs import get_encoder
from aiortc.codecs.base import Encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from recorder.errors import UnsupportedCodec


class Frame(Protocol):
    """An encoded frame as the relay forwards it (see server.passthrough.EncodedFrame)."""

    @property
    def data(self) -> bytes: ...

    @property
    def timestamp(self) -> int: ...

    @property
    def keyframe(self) -> bool: ...



@dataclass(frozen=True)
class StreamSpec:
    """One m-line of the SDP handed to ffmpeg."""

    kind: str
    codec: str  # "H264" or "opus"
    clock_rate: int
    payload_type: int
    channels: int | None
    port: int  # RTP; RTCP is port + 1

    def sdp(self) -> str:
        rtpmap = f"{self.codec}/{self.clock_rate}" + (f"/{self.channels}" if self.channels else "")
        lines = [f"m={self.kind} {self.port} RTP/AVP {self.payload_type}",
                 f"a=rtpmap:{self.payload_type} {rtpmap}"]
        if self.codec == "H264":
            lines.append(f"a=fmtp:{self.payload_type} packetization-mode=1")
        return "\r\n".join(lines)


SUPPORTED = {"H264": ("video", 90000, 96, None), "OPUS": ("audio", 48000, 111, 2)}


def stream_spec(kind: str, codec: str, port: int) -> StreamSpec:
    try:
        expected_kind, clock, pt, channels = SUPPORTED[codec.upper()]
    except KeyError:
        raise UnsupportedCodec(
            f"{codec} cannot be archived without re-encoding (HLS/fMP4 takes H264 and Opus); "
            "ask the teacher's page or encoder to send H264") from None
    if expected_kind != kind:
        raise UnsupportedCodec(f"{codec} is not a {kind} codec")
    name = "H264" if codec.upper() == "H264" else "opus"
    return StreamSpec(kind, name, clock, pt, channels, port)


def session_sdp(streams: list[StreamSpec]) -> str:
    head = ["v=0", "o=- 0 0 IN IP4 127.0.0.1", "s=ClassCast recording", "c=IN IP4 127.0.0.1",
            "t=0 0"]
    return "\r\n".join(head + [s.sdp() for s in streams]) + "\r\n"


def free_port_pair() -> int:
    """An even port P with P and P+1 free on loopback (RTP and RTCP)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        port -= port % 2
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a, \
                    socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue


def port_bound(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


class RtpStream:
    """Packetizes one stream's frames and sends them, with periodic sender reports."""

    def __init__(self, spec: StreamSpec, transport: asyncio.DatagramTransport) -> None:
        self.spec = spec
        self._transport = transport
        self._ssrc = random.getrandbits(32)
        self._seq = random.getrandbits(15)
        codec = RTCRtpCodecParameters(mimeType=f"{spec.kind}/{spec.codec}",
                                      clockRate=spec.clock_rate, channels=spec.channels,
                                      payloadType=spec.payload_type)
        self._encoder: Encoder | None = get_encoder(codec) if spec.codec == "H264" else None
        self._time_base = fractions.Fraction(1, spec.clock_rate)
        self._packets = 0
        self._octets = 0
        self.frames = 0
        self.bytes_in = 0
        self._last_packet: bytes | None = None

    def send(self, frame: Frame) -> None:
        if self._encoder is not None:
            packet = av.Packet(frame.data)
            packet.pts = frame.timestamp
            packet.time_base = self._time_base
            payloads, _ = self._encoder.pack(packet)
        else:
            payloads = [frame.data]
        timestamp = frame.timestamp & 0xFFFFFFFF
        for i, payload in enumerate(payloads):
            rtp = RtpPacket(payload_type=self.spec.payload_type, sequence_number=self._seq,
                            timestamp=timestamp, ssrc=self._ssrc,
                            marker=int(i == len(payloads) - 1), payload=payload)
            self._last_packet = rtp.serialize()
            self._transport.sendto(self._last_packet, ("127.0.0.1", self.spec.port))
            self._seq = (self._seq + 1) & 0xFFFF
            self._packets += 1
            self._octets += len(payload)
        self.frames += 1
        self.bytes_in += len(frame.data)

    def nudge(self) -> None:
        """Send the last packet again. ffmpeg acts on SIGTERM only when its input wakes it,
        and drops a repeated sequence number, so this ends a recording without changing it."""
        if self._last_packet is not None and not self._transport.is_closing():
            self._transport.sendto(self._last_packet, ("127.0.0.1", self.spec.port))
