"""Publish a recording-room camera (RTSP/RTMP URL) or a file into a room over WHIP.

ffmpeg (argv built with ffmpeg-python) normalises the source into MPEG-TS on a FIFO: H264 video
is copied as Annex-B (only a non-H264 source is encoded, once), audio becomes Opus. aiortc's
non-decoding MediaPlayer reads the FIFO and its packets go out over WHIP untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ffmpeg
from aiortc import RTCRtpCodecCapability, RTCRtpSender
from aiortc.contrib.media import MediaPlayer

from server.whipclient import WhipSession

logger = logging.getLogger(__name__)

LIVE_PREFIXES = ("rtsp://", "rtsps://", "rtmp://", "rtmps://", "srt://", "udp://", "http://",
                 "https://")
DEMO_SOURCE = "classcast-demo"


@dataclass(frozen=True)
class IngestOptions:
    loop: bool = False
    video_bitrate: str = "1500k"  # only when the source's video must be encoded
    keyframe_interval_s: float = 2.0


def _probe_video_codec(url: str) -> str | None:
    try:
        info = ffmpeg.probe(url, select_streams="v:0")
    except ffmpeg.Error as exc:
        raise IngestError(f"cannot read {url}: "
                          f"{exc.stderr.decode(errors='replace').strip()[-300:]}") from exc
    streams = info.get("streams", [])
    return str(streams[0]["codec_name"]) if streams else None


class IngestError(Exception):
    pass


def ffmpeg_argv(url: str, output: str, options: IngestOptions,
                video_codec: str | None) -> list[str]:
    """The ffmpeg command line that turns `url` into relay-ready MPEG-TS at `output`."""
    if url == DEMO_SOURCE:
        video = ffmpeg.input("testsrc2=size=1280x720:rate=30", f="lavfi", re=None)
        audio = ffmpeg.input("sine=frequency=440:beep_factor=4:sample_rate=48000",
                             f="lavfi", re=None)
        video_stream: Any = video.video
        audio_stream: Any = audio.audio
        encode_video = True
    else:
        input_args: dict[str, Any] = {}
        if not url.startswith(LIVE_PREFIXES):
            input_args["re"] = None
            if options.loop:
                input_args["stream_loop"] = -1
        source = ffmpeg.input(url, **input_args)
        video_stream = source["v:0?"]
        audio_stream = source["a:0?"]
        encode_video = video_codec not in (None, "h264")
    gop = max(1, round(30 * options.keyframe_interval_s))
    video_args: dict[str, Any] = (
        {"c:v": "libx264", "preset": "veryfast", "tune": "zerolatency", "profile:v": "baseline",
         "b:v": options.video_bitrate, "maxrate": options.video_bitrate,
         "bufsize": options.video_bitrate, "g": gop, "pix_fmt": "yuv420p",
         "bsf:v": "h264_mp4toannexb"}
        if encode_video else {"c:v": "copy", "bsf:v": "h264_mp4toannexb"})
    out = ffmpeg.output(video_stream, audio_stream, output, f="mpegts",
                        **video_args, **{"c:a": "libopus", "b:a": "64k", "ar": 48000, "ac": 2},
                        muxdelay=0, flush_packets=1)
    return list(out.global_args("-hide_banner", "-loglevel", "error", "-nostdin")
                .overwrite_output().compile())


def h264_preferences() -> list[RTCRtpCodecCapability]:
    """Pin a sender to H264 packetization-mode 1 (what the MPEG-TS source carries), with RTX."""
    caps = RTCRtpSender.getCapabilities("video").codecs
    h264 = [c for c in caps if c.mimeType == "video/H264"
            and str(c.parameters.get("packetization-mode")) == "1"]
    rtx = [c for c in caps if c.mimeType == "video/rtx"]
    if not h264:
        raise IngestError("this aiortc build offers no H264 packetization-mode 1")
    return h264[:1] + rtx


@contextlib.asynccontextmanager
async def source_player(url: str, options: IngestOptions) -> AsyncIterator[MediaPlayer]:
    """An ffmpeg process feeding a FIFO, and a non-decoding MediaPlayer reading it."""
    video_codec = None
    if url != DEMO_SOURCE:
        video_codec = await asyncio.to_thread(_probe_video_codec, url)
    with tempfile.TemporaryDirectory(prefix="classcast-ingest-") as tmp:
        fifo = str(Path(tmp) / "source.ts")
        os.mkfifo(fifo)
        argv = ffmpeg_argv(url, fifo, options, video_codec)
        logger.info("ingest: %s", " ".join(argv))
        process = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL)
        try:
            opening = asyncio.create_task(asyncio.to_thread(
                MediaPlayer, fifo, format="mpegts", decode=False))
            exited = asyncio.create_task(process.wait())
            done, _ = await asyncio.wait({opening, exited}, return_when=asyncio.FIRST_COMPLETED)
            if opening not in done:
                # ffmpeg failed before writing: unblock the reader by opening the FIFO ourselves
                await asyncio.to_thread(lambda: open(fifo, "wb").close())
                await asyncio.gather(opening, return_exceptions=True)
                raise IngestError(f"ffmpeg could not read {url} (exit {process.returncode})")
            exited.cancel()
            await asyncio.gather(exited, return_exceptions=True)
            yield opening.result()
        finally:
            await stop_process(process)


async def stop_process(process: asyncio.subprocess.Process, timeout_s: float = 5.0) -> None:
    """terminate → wait(timeout) → kill, as DESIGN.md rule 5 asks."""
    if process.returncode is not None:
        return
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()


async def ingest(url: str, whip_endpoint: str, token: str, *,
                 options: IngestOptions = IngestOptions(),
                 ice_addresses: Sequence[str] = (),
                 stop: asyncio.Event | None = None) -> None:
    """Publish `url` to `whip_endpoint` until the source ends, the peer fails, or `stop`."""
    async with source_player(url, options) as player:
        session = WhipSession(whip_endpoint, token, ice_addresses=ice_addresses)
        ended = asyncio.Event()

        @session.pc.on("connectionstatechange")
        def on_state() -> None:
            if session.pc.connectionState in ("failed", "closed"):
                ended.set()

        if player.video is not None:
            transceiver = session.pc.addTransceiver(player.video, direction="sendonly")
            transceiver.setCodecPreferences(h264_preferences())
            player.video.on("ended", ended.set)
        if player.audio is not None:
            session.pc.addTransceiver(player.audio, direction="sendonly")
        try:
            await session.start()
            logger.info("ingest: publishing %s to %s", url, whip_endpoint)
            waiters = [asyncio.create_task(ended.wait())]
            if stop is not None:
                waiters.append(asyncio.create_task(stop.wait()))
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waiters:
                    w.cancel()
                await asyncio.gather(*waiters, return_exceptions=True)
        finally:
            await session.close()
