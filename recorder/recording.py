"""One recording: spool directory, ffmpeg segmenter, RTP feed, uploader, and its finalization.

Spool layout (`<spool>/<id>/`): `recording.json` (who, what, when; written first, so a crash
can be recovered), `input.sdp`, `index.m3u8` + `init.mp4` + `seg_NNNNN.m4s` from ffmpeg.
Bucket layout (`<prefix>/<id>/`): the same playlist, init and segments, `thumb.jpg`,
`manifest.json` (written last: a recording without a manifest is not finished).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import shutil
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import ffmpeg

from recorder import hls
from recorder.errors import RecorderError
from recorder.manifest import LessonInfo, LessonQuestion, Manifest
from recorder.metrics import RecorderMetrics
from recorder.rtp import Frame, RtpStream, free_port_pair, stream_spec
from recorder.segmenter import INIT, PLAYLIST, Segmenter
from recorder.store import ObjectStore
from recorder.uploader import Uploader

logger = logging.getLogger(__name__)

STATE = "recording.json"
THUMBNAIL = "thumb.jpg"
THUMBNAIL_SEGMENT = 5  # ~10 s into the lesson, past the first fumbling with the camera


@dataclass(frozen=True)
class RecorderConfig:
    segment_s: float = 2.0
    prefix: str = "lessons"
    upload_interval_s: float = 0.5


Finished = Callable[[Manifest], Awaitable[None]]


class Recording:
    def __init__(self, recording_id: str, room: str, lesson: LessonInfo, codecs: dict[str, str],
                 spool: Path, store: ObjectStore, config: RecorderConfig,
                 metrics: RecorderMetrics, started_at: float | None = None) -> None:
        self.id = recording_id
        self.room = room
        self.lesson = lesson
        self.codecs = codecs
        self.spool = spool
        self.config = config
        self.started_at = started_at or time.time()
        self.status = "starting"
        self.error: str | None = None
        self.upload_error: str | None = None  # the last failed upload pass, until one succeeds
        self.uploader = Uploader(store, spool, f"{config.prefix}/{recording_id}", metrics)
        self._store = store
        self._metrics = metrics
        self._segmenter: Segmenter | None = None
        self._streams: dict[str, RtpStream] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._thumbnail_done = False
        self._started = False
        self.questions: tuple[LessonQuestion, ...] = ()  # set when the lesson is stopped

    # --- running ----------------------------------------------------------------------------
    async def start(self) -> None:
        specs = [stream_spec(kind, codec, free_port_pair())
                 for kind, codec in sorted(self.codecs.items(), key=lambda kv: kv[0] != "video")]
        await asyncio.to_thread(self.spool.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(self._write_state, "recording")
        self._segmenter = Segmenter(self.spool, specs, self.config.segment_s)
        await self._segmenter.start()
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0), family=socket.AF_INET)
        self._streams = {s.kind: RtpStream(s, self._transport) for s in specs}
        self.uploader.keep.add("seg_00000.m4s")
        self._loop_task = asyncio.create_task(self._upload_loop(), name=f"upload-{self.id}")
        self.status = "recording"
        logger.info("recording %s of room %s started (%s)", self.id, self.room,
                    ", ".join(f"{k} {v}" for k, v in self.codecs.items()))

    def feed(self, kind: str, frame: Frame) -> None:
        """Called for each frame the room forwards (video starts at a keyframe)."""
        stream = self._streams.get(kind)
        if self.status != "recording" or stream is None:
            return
        if not self._started:
            # ffmpeg starts each stream's clock at its first packet, so audio and video must
            # start together: audio waits for the first video frame (a keyframe).
            if "video" in self._streams and kind != "video":
                return
            self._started = True
        stream.send(frame)

    @property
    def bytes_received(self) -> int:
        return sum(s.bytes_in for s in self._streams.values())

    async def halt(self, reason: str) -> None:
        """Stop taking media (e.g. the disk budget is spent); what is recorded is kept."""
        if self.status != "recording":
            return
        self.error = reason
        self.status = "halted"
        logger.error("recording %s of room %s halted: %s; what was recorded is kept",
                     self.id, self.room, reason)
        if self._segmenter is not None:
            await self._segmenter.stop(wake=self._nudge)

    def _nudge(self) -> None:
        for stream in self._streams.values():
            stream.nudge()

    async def _upload_loop(self) -> None:
        delay = self.config.upload_interval_s
        while True:
            await asyncio.sleep(delay)
            try:
                await self._thumbnail_if_due(final=False)
                await self.uploader.sync()
                delay = self.config.upload_interval_s
                self.upload_error = None
            except RecorderError as exc:
                self.upload_error = str(exc)
                self._metrics.upload_failed()
                delay = min(max(delay * 2, 1.0), 10.0)
                logger.warning("recording %s: upload failed (%s); segments stay spooled, "
                               "retrying in %.0f s", self.id, exc, delay)
            if self._segmenter is not None and not self._segmenter.running \
                    and self.status == "recording":
                self.error = f"ffmpeg stopped: {self._segmenter.log_tail()[-200:]}"
                self.status = "halted"
                logger.error("recording %s: %s", self.id, self.error)

    # --- finishing --------------------------------------------------------------------------
    async def finish(self, status: str, stop: asyncio.Event | None = None) -> Manifest | None:
        """Close the recording and archive it; None if `stop` came before S3 took it all."""
        final_status = "stopped" if self.status == "halted" else status
        self.status = "finalizing"  # from here on no frame is fed and no second finish starts
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
            self._loop_task = None
        if self._segmenter is not None:
            await self._segmenter.stop(wake=self._nudge)
        if self._transport is not None:
            self._transport.close()
        if not await asyncio.to_thread(self.spool.exists):
            self.status = "done"  # it never started: nothing to archive
            return None
        await asyncio.to_thread(self._write_state, "finalizing", final_status)
        manifest = await self._archive(final_status, stop)
        self.status = "done" if manifest else "pending_upload"
        return manifest

    async def _archive(self, status: str, stop: asyncio.Event | None) -> Manifest | None:
        text = await asyncio.to_thread(_read, self.spool / PLAYLIST)
        if not text:
            self.error = self.error or "no media was recorded"
            logger.warning("recording %s of room %s has no segments; nothing archived",
                           self.id, self.room)
            await asyncio.to_thread(shutil.rmtree, self.spool, True)
            return None
        text = hls.with_end(text)
        await self._thumbnail_if_due(final=True)
        if not await self.uploader.sync_until_done(text, stop):
            return None
        playlist = hls.parse(text)
        thumb = self.spool / THUMBNAIL
        thumbnail_key = None
        if await asyncio.to_thread(thumb.exists):
            thumbnail_key = self.uploader.key(THUMBNAIL)
        manifest = Manifest(
            id=self.id, room=self.room, lesson=self.lesson, started_at=self.started_at,
            ended_at=time.time(), duration_s=round(playlist.duration_s, 3),
            segments=len(playlist.segments), codecs=self.codecs,
            bytes=self.uploader.state.bytes, status=status,
            playlist=self.uploader.key(PLAYLIST), thumbnail=thumbnail_key, error=self.error,
            extra=self._extra(),
            questions=self.questions)
        while True:
            try:
                if thumbnail_key:
                    await self._store.put_file(thumbnail_key, thumb, "image/jpeg")
                await self._store.put_bytes(self.uploader.key("manifest.json"),
                                            manifest.to_json(), "application/json")
                break
            except RecorderError as exc:
                logger.warning("recording %s: manifest not stored yet (%s)", self.id, exc)
                if stop is not None and stop.is_set():
                    return None
                await asyncio.sleep(2)
        await asyncio.to_thread(shutil.rmtree, self.spool, True)
        self._metrics.recording_finished(status, manifest.duration_s)
        logger.info("recording %s of room %s archived: %.1f s, %d segments, %s", self.id,
                    self.room, manifest.duration_s, manifest.segments, status)
        return manifest

    def _extra(self) -> dict[str, object]:
        """Manifest fields beyond the schema's: what arrived, and the county (the catalog's
        facet, which reads it from here)."""
        extra: dict[str, object] = {}
        if self.bytes_received:
            extra["received_bytes"] = self.bytes_received
        if self.lesson.county:
            extra["county"] = self.lesson.county
        return extra

    async def _thumbnail_if_due(self, final: bool) -> None:
        if self._thumbnail_done:
            return
        text = await asyncio.to_thread(_read, self.spool / PLAYLIST)
        segments = hls.parse(text).segments if text else ()
        if not segments or (not final and len(segments) <= THUMBNAIL_SEGMENT):
            return
        index = THUMBNAIL_SEGMENT if len(segments) > THUMBNAIL_SEGMENT else 0
        source = self.spool / segments[index].uri
        if not await asyncio.to_thread(source.exists):
            source = self.spool / segments[0].uri
        if await make_thumbnail(self.spool / INIT, source, self.spool / THUMBNAIL):
            self._thumbnail_done = True
            if index != 0 and "seg_00000.m4s" in self.uploader.keep:
                self.uploader.keep.discard("seg_00000.m4s")
                if "seg_00000.m4s" in self.uploader.state.stored:
                    await asyncio.to_thread((self.spool / "seg_00000.m4s").unlink, True)

    # --- spool state ------------------------------------------------------------------------
    def _write_state(self, phase: str, final_status: str | None = None) -> None:
        state = {"id": self.id, "room": self.room, "lesson": dataclasses.asdict(self.lesson),
                 "codecs": self.codecs, "started_at": self.started_at, "phase": phase,
                 "final_status": final_status, "error": self.error}
        tmp = self.spool / (STATE + ".tmp")
        tmp.write_text(json.dumps(state, ensure_ascii=False), encoding="utf-8")
        tmp.replace(self.spool / STATE)

    @classmethod
    def from_spool(cls, spool: Path, store: ObjectStore, config: RecorderConfig,
                   metrics: RecorderMetrics) -> tuple[Recording, str]:
        """A recording left behind by a crash; returns it and the status to archive it with."""
        state = json.loads((spool / STATE).read_text(encoding="utf-8"))
        recording = cls(state["id"], state["room"], LessonInfo(**state["lesson"]),
                        dict(state["codecs"]), spool, store, config, metrics,
                        started_at=float(state["started_at"]))
        recording.error = state.get("error")
        recording.status = "finalizing"
        return recording, state.get("final_status") or "interrupted"


async def make_thumbnail(init: Path, segment: Path, out: Path) -> bool:
    """One JPEG from the keyframe that starts `segment` (decodes one frame, nothing more)."""
    source = out.with_suffix(".src.mp4")

    def join() -> None:
        with open(source, "wb") as dst:
            for part in (init, segment):
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, dst)

    try:
        await asyncio.to_thread(join)
    except OSError:
        return False
    argv = (ffmpeg.input(str(source))
            .output(str(out), vframes=1, vf="scale=480:-2", **{"q:v": 4})
            .global_args("-hide_banner", "-loglevel", "error", "-nostdin")
            .overwrite_output().compile())
    process = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    _, err = await process.communicate()
    await asyncio.to_thread(source.unlink, True)
    if process.returncode != 0:
        logger.warning("thumbnail failed: %s", err.decode(errors="replace").strip()[-200:])
        return False
    return True


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
