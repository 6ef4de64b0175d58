"""Encoded-frame passthrough for aiortc 1.16.0: receive without decoding, send without encoding.

aiortc decodes every received track and encodes every sent one. The relay needs neither, so
this module owns the (pinned, tested) hooks into aiortc's internals:

- receive side: the receiver's jitter buffer is replaced by a `FrameAssembler`, which hands each
  complete encoded frame to a callback as soon as its last packet arrives (aiortc's own buffer
  waits for the *next* frame, and for audio for four more, before it lets one go). The receiver's
  decoder thread then never gets work.
- send side: the sender's encoder is replaced by an object with aiortc's `pack()` signature that
  returns payloads packetized once per room (see `forwarder.RoomTrack`), plus the subscriber's
  own continuous RTP timestamp.
- keyframe requests from a subscriber (PLI/FIR) are routed to a callback instead of aiortc's
  encoder flag, so the relay can forward them upstream.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiortc import RTCRtpReceiver, RTCRtpSender
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtcrtpsender import RTP_HISTORY_SIZE
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_add, uint16_gt

logger = logging.getLogger(__name__)

AIORTC_VERSION = "1.16.0"
VIDEO_CLOCK = 90000
AUDIO_CLOCK = 48000


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """One complete encoded frame as the publisher sent it."""

    data: bytes
    timestamp: int  # publisher RTP timestamp, unwrapped to start near 0 for its session
    keyframe: bool
    received_at: float  # time.monotonic() when its last packet arrived


def is_keyframe(codec_name: str, data: bytes) -> bool:
    """Whether a depayloaded frame starts a decodable picture."""
    name = codec_name.upper()
    if name == "VP8":
        # RFC 6386 9.1: bit 0 of the frame tag is 0 for a key frame.
        return len(data) > 0 and (data[0] & 0x01) == 0
    if name == "H264":
        return _h264_has_idr(data)
    return True  # audio: every frame stands alone


def starts_frame(codec_name: str, payload: bytes) -> bool:
    """Whether an RTP payload is the first packet of a frame (read from its payload header)."""
    if not payload:
        return False
    name = codec_name.upper()
    if name == "H264":
        nal_type = payload[0] & 0x1F
        if nal_type == 28:  # FU-A: its start bit
            return len(payload) > 1 and bool(payload[1] & 0x80)
        return 1 <= nal_type <= 24  # a single NAL unit or a STAP-A
    if name == "VP8":
        # RFC 7741 4.2: S (start of a partition) set and partition index 0
        return bool(payload[0] & 0x10) and (payload[0] & 0x07) == 0
    return True


def _h264_has_idr(data: bytes) -> bool:
    # aiortc's depayloader yields Annex-B: each NAL unit after a 00 00 01 start code.
    start = 0
    while True:
        i = data.find(b"\x00\x00\x01", start)
        if i < 0 or i + 3 >= len(data):
            return False
        nal_type = data[i + 3] & 0x1F
        if nal_type == 5:
            return True
        if nal_type in (1, 2, 3, 4):  # a non-IDR slice before any IDR: not a keyframe
            return False
        start = i + 3


class Packetizer:
    """Splits encoded frames into RTP payloads, once per frame for all subscribers of a track."""

    def __init__(self, codec_name: str) -> None:
        self.codec_name = codec_name.upper()
        self._picture_id = 0

    def __call__(self, data: bytes) -> list[bytes]:
        if self.codec_name == "H264":
            payloads: list[bytes] = H264Encoder._packetize(H264Encoder._split_bitstream(data))
            return payloads
        if self.codec_name == "VP8":
            payloads = Vp8Encoder._packetize(data, self._picture_id)
            self._picture_id = (self._picture_id + 1) % (1 << 15)
            return payloads
        return [data]


FrameSink = Callable[[EncodedFrame], None]


class FrameAssembler:
    """Replaces aiortc's JitterBuffer: emits complete frames at once, in order.

    Audio: every packet is one frame, forwarded on arrival (late duplicates dropped).
    Video: a frame is the run of packets with one timestamp that ends with the marker bit; it
    is emitted when all its packets are there. A hole that is not filled within `loss_wait_s`
    (NACK retransmissions arrive through aiortc's RTX unwrapping) is skipped; forwarding then
    resumes at the next keyframe and a keyframe is requested (returned as aiortc's pli_flag).
    """

    CAPACITY = 1024

    def __init__(self, kind: str, codec_name: str, sink: FrameSink,
                 loss_wait_s: float = 0.5) -> None:
        self.kind = kind
        self.codec_name = codec_name
        self._sink = sink
        self._loss_wait_s = loss_wait_s
        self._packets: dict[int, RtpPacket] = {}
        self._next_seq: int | None = None  # first sequence number of the next frame
        self._hole_since: float | None = None
        self._need_keyframe = True
        self._timestamp_origin: int | None = None
        self._timestamp_last = 0
        self._timestamp_cycles = 0
        self.media_ssrc: int | None = None
        self.frames = 0
        self.skipped_frames = 0

    # aiortc's JitterBuffer interface -------------------------------------------------------
    @property
    def capacity(self) -> int:
        return self.CAPACITY

    def add(self, packet: RtpPacket) -> tuple[bool, None]:
        self.media_ssrc = packet.ssrc
        if self.kind == "audio":
            self._add_audio(packet)
            return False, None
        return self._add_video(packet), None

    # ---------------------------------------------------------------------------------------
    def _unwrap(self, timestamp: int) -> int:
        if self._timestamp_origin is None:
            self._timestamp_origin = timestamp
            self._timestamp_last = timestamp
        elif timestamp < self._timestamp_last and self._timestamp_last - timestamp > 1 << 31:
            self._timestamp_cycles += 1 << 32
        elif timestamp > self._timestamp_last and timestamp - self._timestamp_last > 1 << 31:
            return timestamp - self._timestamp_origin + self._timestamp_cycles - (1 << 32)
        self._timestamp_last = timestamp
        return timestamp - self._timestamp_origin + self._timestamp_cycles

    def _emit(self, data: bytes, timestamp: int, keyframe: bool) -> None:
        self.frames += 1
        self._sink(EncodedFrame(data, self._unwrap(timestamp), keyframe, time.monotonic()))

    def _add_audio(self, packet: RtpPacket) -> None:
        seq = packet.sequence_number
        if self._next_seq is not None and not uint16_gt(seq, uint16_add(self._next_seq, -1)):
            return  # late or duplicate
        self._next_seq = uint16_add(seq, 1)
        data: bytes = packet._data  # type: ignore[attr-defined]
        if data:
            self._emit(data, packet.timestamp, True)

    def _add_video(self, packet: RtpPacket) -> bool:
        seq = packet.sequence_number
        if self._next_seq is None:
            # Start at a packet that opens a frame, or else after the next frame's end.
            if starts_frame(self.codec_name, packet.payload):
                self._next_seq = seq
            elif packet.marker:
                self._next_seq = uint16_add(seq, 1)
                return False
            else:
                return False
        if not uint16_gt(seq, uint16_add(self._next_seq, -1)):
            return False  # late or duplicate
        self._packets[seq] = packet
        if len(self._packets) > self.CAPACITY:
            self._skip_hole()
            self._drain()
            return True
        return self._drain()

    def _drain(self) -> bool:
        """Emit every complete frame at the head; skip a hole that waited too long.

        Returns True when a keyframe should be requested upstream."""
        request_keyframe = False
        while self._next_seq is not None:
            parts = self._head_frame(self._next_seq)
            if parts is None:
                if not self._packets:
                    self._hole_since = None
                    break
                now = time.monotonic()
                if self._hole_since is None:
                    self._hole_since = now
                if now - self._hole_since <= self._loss_wait_s:
                    break
                self._skip_hole()
                request_keyframe = True
                continue
            for p in parts:
                del self._packets[p.sequence_number]
            self._next_seq = uint16_add(parts[-1].sequence_number, 1)
            self._hole_since = None
            data = b"".join(p._data for p in parts)  # type: ignore[attr-defined]
            keyframe = is_keyframe(self.codec_name, data)
            if self._need_keyframe and not keyframe:
                self.skipped_frames += 1
                continue
            self._need_keyframe = False
            self._emit(data, parts[0].timestamp, keyframe)
        return request_keyframe

    def _head_frame(self, seq: int) -> list[RtpPacket] | None:
        """The packets of the frame starting at `seq`, or None while it is incomplete."""
        first = self._packets.get(seq)
        if first is None:
            return None
        parts: list[RtpPacket] = []
        while True:
            packet = self._packets.get(seq)
            if packet is None:
                return None
            if packet.timestamp != first.timestamp:
                return parts  # the sender set no marker on the previous frame's end
            parts.append(packet)
            if packet.marker:
                return parts
            seq = uint16_add(seq, 1)

    def _skip_hole(self) -> None:
        """Give up on lost packets: resume after the nearest marker held, at a keyframe."""
        assert self._next_seq is not None
        origin = self._next_seq

        def distance(s: int) -> int:
            return uint16_add(s, -origin)

        markers = [s for s, p in self._packets.items() if p.marker]
        if markers:
            end = min(markers, key=distance)
            for s in [s for s in self._packets if distance(s) <= distance(end)]:
                del self._packets[s]
            self._next_seq = uint16_add(end, 1)
        else:
            self._packets.clear()
            self._next_seq = None
        self.skipped_frames += 1
        self._need_keyframe = True
        self._hole_since = None
        logger.info("video packets lost for good; waiting for the next keyframe")


def attach_receiver(receiver: RTCRtpReceiver, assembler: FrameAssembler) -> None:
    """Make `receiver` hand complete encoded frames to `assembler`'s sink instead of decoding."""
    if not hasattr(receiver, "_RTCRtpReceiver__jitter_buffer"):
        raise RuntimeError(f"aiortc changed: RTCRtpReceiver has no jitter buffer (need "
                           f"aiortc {AIORTC_VERSION})")
    receiver._RTCRtpReceiver__jitter_buffer = assembler


async def request_keyframe(receiver: RTCRtpReceiver, media_ssrc: int) -> None:
    """Send a PLI for `media_ssrc` (the media SSRC, never the RTX one) to the publisher."""
    await receiver._send_rtcp_pli(media_ssrc)


class Packer(Protocol):
    """What aiortc's sender calls for non-Frame items its track returns."""

    def pack(self, item: Any) -> tuple[list[bytes], int]: ...


# (sequence number, RTT s or None, still in the sender's history) -> resend it?
RetransmitFilter = Callable[[int, float | None, bool], bool]


def attach_sender(sender: RTCRtpSender, packer: Packer,
                  on_keyframe_request: Callable[[], None],
                  retransmit: RetransmitFilter | None = None) -> None:
    """Make `sender` send pre-packetized payloads, report keyframe requests and, with
    `retransmit`, answer only the NACKed sequence numbers it allows."""
    if not (hasattr(sender, "_RTCRtpSender__encoder") and hasattr(sender, "_RTCRtpSender__rtt")
            and hasattr(sender, "_RTCRtpSender__rtp_history")
            and hasattr(sender, "_retransmit")):
        raise RuntimeError(f"aiortc changed: RTCRtpSender has no encoder, RTT, history or "
                           f"retransmit slot (need aiortc {AIORTC_VERSION})")
    sender._RTCRtpSender__encoder = packer
    # RTCRtpSender._handle_rtcp_packet calls self._send_keyframe() for PLI and FIR, and
    # self._retransmit(seq) for every sequence number of a NACK.
    sender._send_keyframe = on_keyframe_request  # type: ignore[method-assign]
    if retransmit is not None:
        resend = sender._retransmit

        history: dict[int, Any] = sender._RTCRtpSender__rtp_history

        async def filtered(sequence_number: int) -> None:
            kept = history.get(sequence_number % RTP_HISTORY_SIZE)
            available = kept is not None and kept.sequence_number == sequence_number
            if retransmit(sequence_number, sender._RTCRtpSender__rtt, available):
                await resend(sequence_number)

        sender._retransmit = filtered  # type: ignore[method-assign]
