"""Unit tests of the frame assembler and keyframe detection (logic only; the hooks into
aiortc are exercised by every real-peer test in test_relay.py)."""

from __future__ import annotations

import pytest
from aiortc import RTCRtpReceiver, RTCRtpSender
from aiortc.rtp import RtpPacket

from server import passthrough
from server.passthrough import EncodedFrame, FrameAssembler, Packetizer, is_keyframe

IDR = b"\x00\x00\x00\x01\x67\x42" + b"\x00\x00\x00\x01\x68\xce" + b"\x00\x00\x01\x65\x88"
P_SLICE = b"\x00\x00\x00\x01\x41\x9a"


def packet(seq: int, ts: int, data: bytes, marker: bool) -> RtpPacket:
    p = RtpPacket(payload_type=96, sequence_number=seq % 65536, timestamp=ts % (1 << 32),
                  marker=int(marker), ssrc=1234)
    p._data = data  # what aiortc's depayloader leaves on the packet
    return p


def video_frames(assembler: FrameAssembler, frames: list[tuple[int, list[bytes]]],
                 first_seq: int, order: list[int] | None = None) -> list[RtpPacket]:
    packets = []
    seq = first_seq
    for ts, parts in frames:
        for i, part in enumerate(parts):
            packets.append(packet(seq, ts, part, i == len(parts) - 1))
            seq += 1
    for i in order if order is not None else range(len(packets)):
        assembler.add(packets[i])
    return packets


def collect() -> tuple[list[EncodedFrame], FrameAssembler]:
    out: list[EncodedFrame] = []
    return out, FrameAssembler("video", "H264", out.append, loss_wait_s=0.0)


def test_keyframe_detection() -> None:
    assert is_keyframe("H264", IDR)
    assert not is_keyframe("H264", P_SLICE)
    assert not is_keyframe("H264", b"")
    assert is_keyframe("VP8", b"\x10\x02\x00")  # frame tag bit 0 clear
    assert not is_keyframe("VP8", b"\x11\x02\x00")
    assert is_keyframe("opus", b"\xfc")


def test_frames_are_emitted_on_their_marker_packet_in_order() -> None:
    out, asm = collect()
    asm.add(packet(99, 0, b"", True))  # the marker that ends whatever came before
    video_frames(asm, [(3000, [IDR[:6], IDR[6:]]), (6000, [P_SLICE]), (9000, [P_SLICE])], 100)
    assert [f.timestamp for f in out] == [0, 3000, 6000]
    assert out[0].data == IDR and out[0].keyframe and not out[1].keyframe


def test_reordered_packets_wait_for_the_hole() -> None:
    out, asm = collect()
    asm._loss_wait_s = 10.0
    asm.add(packet(65534, 0, b"", True))
    # sequence numbers wrap; the second packet of the first frame arrives last
    video_frames(asm, [(3000, [IDR[:6], IDR[6:]]), (6000, [P_SLICE])], 65535, order=[0, 2, 1])
    assert [f.timestamp for f in out] == [0, 3000]


def test_a_lost_packet_skips_to_the_next_keyframe_and_asks_for_one() -> None:
    out, asm = collect()
    asm.add(packet(9, 0, b"", True))
    frames = [(3000, [IDR]), (6000, [P_SLICE, P_SLICE]), (9000, [P_SLICE]), (12000, [IDR])]
    packets = video_frames(asm, frames, 10, order=[0, 1])  # IDR, first half of a P frame
    asked = asm.add(packets[3])[0]  # the next P frame; the hole (packet 2) is given up on
    assert asked, "a keyframe request goes upstream"
    assert len(out) == 1
    asm.add(packets[4])  # the IDR after the loss is forwarded, the P frame before it is not
    assert [f.keyframe for f in out] == [True, True]
    assert asm.skipped_frames >= 1


def test_audio_is_forwarded_per_packet_and_late_ones_dropped() -> None:
    out: list[EncodedFrame] = []
    asm = FrameAssembler("audio", "opus", out.append)
    for seq in (1, 2, 4, 3, 5):
        asm.add(packet(seq, seq * 960, bytes([seq]), False))
    assert [f.data for f in out] == [b"\x01", b"\x02", b"\x04", b"\x05"]


def test_h264_packetizer_splits_large_frames() -> None:
    payloads = Packetizer("H264")(b"\x00\x00\x00\x01\x65" + bytes(5000))
    assert len(payloads) == 4 and all(len(p) <= 1300 for p in payloads)


async def test_aiortc_internals_the_hooks_rely_on() -> None:
    """If aiortc changes these, the relay must fail loudly, not decode or drop media."""
    import aiortc

    assert aiortc.__version__ == passthrough.AIORTC_VERSION
    pc = aiortc.RTCPeerConnection()
    transceiver = pc.addTransceiver("video")
    receiver, sender = transceiver.receiver, transceiver.sender
    assert "_RTCRtpReceiver__jitter_buffer" in vars(receiver)
    assert "_RTCRtpSender__encoder" in vars(sender)
    asm = FrameAssembler("video", "VP8", lambda f: None)
    passthrough.attach_receiver(receiver, asm)
    assert vars(receiver)["_RTCRtpReceiver__jitter_buffer"] is asm
    requests: list[int] = []
    passthrough.attach_sender(sender, Packetizer("VP8"), lambda: requests.append(1))  # type: ignore[arg-type]
    sender._send_keyframe()
    assert requests == [1]
    assert hasattr(RTCRtpReceiver, "_send_rtcp_pli")
    assert hasattr(RTCRtpSender, "_handle_rtcp_packet")
    await pc.close()


@pytest.mark.parametrize("codec", ["VP8", "H264"])
def test_packetizer_output_depayloads_to_the_same_frame(codec: str) -> None:
    from aiortc.codecs import depayload
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters

    frame = (b"\x10\x02\x00" + bytes(range(256)) * 20 if codec == "VP8"
             else b"\x00\x00\x00\x01\x65" + bytes(range(256)) * 20)
    params = RTCRtpCodecParameters(mimeType=f"video/{codec}", clockRate=90000, payloadType=96)
    data = b"".join(depayload(params, p) for p in Packetizer(codec)(frame))
    assert data.endswith(frame[-1000:]) and len(data) >= len(frame) - 4


def test_a_publishers_first_frame_is_kept_when_its_first_packet_opens_it() -> None:
    out, asm = collect()
    first = packet(500, 0, IDR[:6], False)
    first.payload = b"\x7c\x85"  # FU-A, start bit set
    asm.add(first)
    last = packet(501, 0, IDR[6:], True)
    last.payload = b"\x7c\x45"
    asm.add(last)
    asm.add(packet(502, 3000, P_SLICE, True))
    assert [f.timestamp for f in out] == [0, 3000] and out[0].keyframe


def test_frame_starts_are_read_from_payload_headers() -> None:
    from server.passthrough import starts_frame

    assert starts_frame("H264", b"\x65\x88")  # a single NAL unit
    assert starts_frame("H264", b"\x78\x00")  # STAP-A
    assert starts_frame("H264", b"\x7c\x85") and not starts_frame("H264", b"\x7c\x05")
    assert starts_frame("VP8", b"\x90\x80") and not starts_frame("VP8", b"\x80\x80")
    assert not starts_frame("VP8", b"")
