"""Benchmark peers, each kind in its own process: `python benchmarks/peers.py publish|subscribe`.

- publish: sends the pre-encoded clip (no encoder runs) through a WHIP session, pinned to
  H264; records (frame key, pts, send time) for every video frame and the send time of every
  Opus packet.
- subscribe: N WHEP sessions that never decode: the project's `FrameAssembler` replaces each
  receiver's jitter buffer, so a subscriber only reassembles frames and records (frame key,
  arrival time). `--no-connect` makes peers that complete the WHEP POST but never apply the
  answer, so ICE never connects (a stalled classroom). `--audio-times` also records the
  arrival time of every Opus packet.

`--ice-address` (repeatable; default 127.0.0.1) is the address the peers gather ICE candidates
on: a peer in a network namespace (benchmarks/weak_link.py) gives its namespace's address.

Both print JSON lines on stdout (`{"event": ...}`) for the orchestrator, stop on SIGTERM and
then write their records as JSON to `--out`. Times are `time.time()` (one machine, one clock).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # see benchmarks/__init__.py

import argparse
import asyncio
import json
import logging
import signal
import time
from collections.abc import Coroutine
from typing import Any

import aiohttp
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
)
from aiortc.rtcrtpparameters import RTCRtpCodecCapability

from benchmarks.clip import ClipAudioTrack, ClipClock, ClipVideoTrack, frame_key, load_clip
from server import ice
from server.passthrough import EncodedFrame, FrameAssembler, attach_receiver
from server.whipclient import WhipError, WhipSession

LOOPBACK = ("127.0.0.1",)
H264_PROFILE = "42e01f"  # constrained baseline, level 3.1: what the clip is


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def h264_preferences() -> list[RTCRtpCodecCapability]:
    codecs = RTCRtpSender.getCapabilities("video").codecs
    h264 = [c for c in codecs if c.mimeType == "video/H264"
            and c.parameters.get("profile-level-id") == H264_PROFILE]
    rtx = [c for c in codecs if c.mimeType == "video/rtx"]
    return h264 + rtx


def opus_preferences() -> list[RTCRtpCodecCapability]:
    return [c for c in RTCRtpSender.getCapabilities("audio").codecs
            if c.mimeType == "audio/opus"]


async def write_json(path: str, data: object) -> None:
    await asyncio.to_thread(Path(path).write_text, json.dumps(data))


def stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


# --- publisher --------------------------------------------------------------------------------
async def publish(args: argparse.Namespace) -> None:
    stop = stop_event()
    clip = await asyncio.to_thread(load_clip, Path(args.clip))
    clock = ClipClock()
    video, audio = ClipVideoTrack(clip, clock), ClipAudioTrack(clip, clock)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    vt = pc.addTransceiver(video, direction="sendonly")
    vt.setCodecPreferences(h264_preferences())
    at = pc.addTransceiver(audio, direction="sendonly")
    at.setCodecPreferences(opus_preferences())
    # aiortc's sender handles PLI/FIR by flagging its encoder; there is none here.
    vt.sender._send_keyframe = video.request_keyframe  # type: ignore[method-assign]
    connected = asyncio.Event()

    @pc.on("connectionstatechange")
    def state_changed() -> None:
        if pc.connectionState == "connected":
            connected.set()

    session = WhipSession(args.url, args.token, ice_addresses=ice_addresses(args), pc=pc)
    started = time.time()
    await session.start()
    await asyncio.wait_for(connected.wait(), 20)
    await asyncio.wait_for(video.started.wait(), 10)
    emit("ready", connect_s=time.time() - started, clip_kbps=round(clip.video_kbps))
    await stop.wait()
    await session.close()
    await write_json(args.out, {
        "sends": video.sends, "audio_sends": audio.sends, "video_frames": video.count,
        "audio_frames": audio.count,
        "keyframes_on_request": video.keyframes_on_request})


# --- subscribers ------------------------------------------------------------------------------
class ChainAssembler(FrameAssembler):
    """A FrameAssembler that remembers whether frames were skipped before the next one it
    hands out: with one reference frame (the clip, and the relay's low rendition), a frame
    decodes only if it is a keyframe or follows a frame that decoded."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.skipped = False

    def _skip_hole(self) -> None:
        self.skipped = True
        super()._skip_hole()


class Subscriber:
    """One classroom: a WHEP session whose receivers reassemble frames without decoding."""

    def __init__(self, url: str, token: str, addresses: tuple[str, ...] = LOOPBACK,
                 audio_times: bool = False) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        video = self.pc.addTransceiver("video", direction="recvonly")
        video.setCodecPreferences(h264_preferences())
        audio = self.pc.addTransceiver("audio", direction="recvonly")
        audio.setCodecPreferences(opus_preferences())
        self._video_assembler = ChainAssembler("video", "H264", self._on_video)
        attach_receiver(video.receiver, self._video_assembler)
        self._video_receiver = video.receiver
        self._pli_at = 0.0
        self._pli_tasks: set[asyncio.Task[None]] = set()
        attach_receiver(audio.receiver, FrameAssembler("audio", "opus", self._on_audio))
        self.addresses = addresses
        self.session = WhipSession(url, token, ice_addresses=addresses, pc=self.pc)
        self.started_at: float | None = None
        self.first_video_at: float | None = None
        self.error: str | None = None
        self.session_id = ""
        self.video: list[tuple[int, int, float]] = []  # (frame key, RTP timestamp, arrival)
        self.decodable: list[bool] = []  # per video frame: a decoder could show it
        self.audio_frames = 0
        self.audio_times: list[float] | None = [] if audio_times else None
        self.has_first_frame = asyncio.Event()

    def _on_video(self, frame: EncodedFrame) -> None:
        now = time.time()
        if self.first_video_at is None:
            self.first_video_at = now
            self.has_first_frame.set()
        self.video.append((frame_key(frame.data), frame.timestamp, now))
        follows = bool(self.decodable) and self.decodable[-1] and not self._video_assembler.skipped
        self.decodable.append(frame.keyframe or follows)
        self._video_assembler.skipped = False
        if not self.decodable[-1]:
            self._ask_for_keyframe(now)

    def _ask_for_keyframe(self, now: float) -> None:
        """What a browser's decoder does when its picture breaks: a PLI (at most 2 a second)."""
        streams = getattr(self._video_receiver, "_RTCRtpReceiver__remote_streams", {})
        if now - self._pli_at < 0.5 or not streams:
            return
        self._pli_at = now
        media_ssrc = next(iter(streams))
        task = asyncio.create_task(self._video_receiver._send_rtcp_pli(media_ssrc))
        self._pli_tasks.add(task)
        task.add_done_callback(self._pli_tasks.discard)

    def _on_audio(self, frame: EncodedFrame) -> None:
        self.audio_frames += 1
        if self.audio_times is not None:
            self.audio_times.append(time.time())

    async def join(self) -> None:
        self.started_at = time.time()
        try:
            await self.session.start()
            self.session_id = (self.session.location or "").rsplit("/", 1)[-1]
        except (WhipError, aiohttp.ClientError, OSError) as exc:
            self.error = str(exc)[:200]
            self.has_first_frame.set()

    async def join_without_connecting(self, url: str, token: str) -> None:
        """POST the offer, get the 201, never apply the answer: ICE never connects."""
        self.started_at = time.time()
        with ice.host_addresses(self.addresses):
            await self.pc.setLocalDescription(await self.pc.createOffer())
        async with aiohttp.ClientSession() as http, http.post(
                url, data=self.pc.localDescription.sdp,
                headers={"Content-Type": "application/sdp",
                         "Authorization": f"Bearer {token}"}) as response:
            await response.read()
            if response.status != 201:
                self.error = f"{response.status}"
        self.has_first_frame.set()

    def record(self) -> dict[str, Any]:
        join_s = (None if self.first_video_at is None or self.started_at is None
                  else self.first_video_at - self.started_at)
        record: dict[str, Any] = {"join_s": join_s, "error": self.error, "video": self.video,
                  "decodable": self.decodable, "audio_frames": self.audio_frames,
                  "session": self.session_id}
        if self.audio_times is not None:
            record["audio_times"] = self.audio_times
        return record


async def subscribe(args: argparse.Namespace) -> None:
    stop = stop_event()
    subs = [Subscriber(args.url, args.token, ice_addresses(args), args.audio_times)
            for _ in range(args.n)]
    tasks: list[asyncio.Task[None]] = []

    async def later(delay: float, coro: Coroutine[Any, Any, None]) -> None:
        await asyncio.sleep(delay)
        await coro

    for i, sub in enumerate(subs):
        coro = (sub.join_without_connecting(args.url, args.token) if args.no_connect
                else sub.join())
        tasks.append(asyncio.create_task(later(args.offset + i * args.stagger, coro)))
    try:
        await asyncio.wait_for(asyncio.gather(*(s.has_first_frame.wait() for s in subs)),
                               args.join_timeout)
    except TimeoutError:
        pass
    emit("ready", joined=sum(1 for s in subs if s.first_video_at is not None),
         posted=sum(1 for s in subs if s.started_at is not None and s.error is None),
         errors=[s.error for s in subs if s.error])
    await stop.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if args.no_connect:
        await asyncio.gather(*(s.pc.close() for s in subs), return_exceptions=True)
    else:
        await asyncio.gather(*(s.session.close() for s in subs), return_exceptions=True)
    await write_json(args.out, {"subs": [s.record() for s in subs]})


def ice_addresses(args: argparse.Namespace) -> tuple[str, ...]:
    return tuple(args.ice_address) or LOOPBACK


# --- entry point ------------------------------------------------------------------------------
def run(coro: Coroutine[Any, Any, None], use_uvloop: bool) -> None:
    if use_uvloop:
        import uvloop
        uvloop.run(coro)
    else:
        asyncio.run(coro)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--ice-address", action="append", default=[],
                        help="address to gather ICE candidates on (default 127.0.0.1)")
    commands = parser.add_subparsers(dest="command", required=True)
    pub = commands.add_parser("publish")
    pub.add_argument("--url", required=True)
    pub.add_argument("--token", required=True)
    pub.add_argument("--clip", required=True)
    pub.add_argument("--out", required=True)
    sub = commands.add_parser("subscribe")
    sub.add_argument("--url", required=True)
    sub.add_argument("--token", required=True)
    sub.add_argument("--n", type=int, required=True)
    sub.add_argument("--offset", type=float, default=0.0, help="seconds before the first join")
    sub.add_argument("--stagger", type=float, default=0.1, help="seconds between joins")
    sub.add_argument("--join-timeout", type=float, default=30.0)
    sub.add_argument("--no-connect", action="store_true")
    sub.add_argument("--audio-times", action="store_true",
                     help="record every Opus packet's arrival time")
    sub.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    run(publish(args) if args.command == "publish" else subscribe(args), args.loop == "uvloop")


if __name__ == "__main__":
    main()
