"""Importing a lesson recorded elsewhere (an MP4 from a classroom recording appliance) into the
archive, in the same layout as a live recording: HLS with fMP4 segments, a thumbnail and a
manifest. H264 video is remuxed (`-c copy`); anything else is encoded once to H264."""

from __future__ import annotations

import asyncio
import logging
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ffmpeg
from prometheus_client import CollectorRegistry

from recorder import hls
from recorder.manifest import LessonInfo, Manifest
from recorder.metrics import RecorderMetrics
from recorder.recording import THUMBNAIL, THUMBNAIL_SEGMENT, make_thumbnail
from recorder.segmenter import INIT, PLAYLIST
from recorder.store import ObjectStore
from recorder.uploader import Uploader

logger = logging.getLogger(__name__)


class ImportFailed(Exception):
    pass


@dataclass(frozen=True)
class ImportRequest:
    path: Path
    lesson: LessonInfo
    room: str = "imported"
    county: str = ""
    description: str = ""
    tags: tuple[str, ...] = ()
    started_at: float | None = None  # default: the file's modification time


def _probe(path: Path) -> dict[str, str]:
    try:
        info = ffmpeg.probe(str(path))
    except ffmpeg.Error as exc:
        raise ImportFailed(f"cannot read {path}: "
                           f"{exc.stderr.decode(errors='replace').strip()[-300:]}") from exc
    codecs: dict[str, str] = {}
    for stream in info.get("streams", []):
        kind = stream.get("codec_type")
        if kind in ("video", "audio") and kind not in codecs:
            codecs[kind] = str(stream.get("codec_name"))
    if "video" not in codecs:
        raise ImportFailed(f"{path} has no video stream")
    return codecs


def hls_argv(source: Path, work: Path, codecs: dict[str, str], segment_s: float) -> list[str]:
    keyframes = f"expr:gte(t,n_forced*{segment_s})"
    video: dict[str, Any] = ({"c:v": "copy"} if codecs["video"] == "h264" else
                             {"c:v": "libx264", "preset": "veryfast", "crf": 23,
                              "pix_fmt": "yuv420p", "force_key_frames": keyframes})
    audio: dict[str, Any] = ({"c:a": "copy"} if codecs.get("audio") in ("aac", "opus")
                             else {"c:a": "aac", "b:a": "96k"})
    return list(ffmpeg.input(str(source)).output(
        str(work / PLAYLIST), **video, **audio, f="hls", hls_time=segment_s,
        hls_segment_type="fmp4", hls_playlist_type="vod", hls_flags="independent_segments",
        hls_fmp4_init_filename=INIT, hls_segment_filename=str(work / "seg_%05d.m4s"),
    ).global_args("-hide_banner", "-loglevel", "error", "-nostdin").overwrite_output().compile())


async def import_lesson(request: ImportRequest, store: ObjectStore, prefix: str = "lessons",
                        segment_s: float = 2.0) -> Manifest:
    codecs = await asyncio.to_thread(_probe, request.path)
    started = request.started_at or (await asyncio.to_thread(request.path.stat)).st_mtime
    lesson_id = time.strftime("%Y%m%d-%H%M%S", time.gmtime(started)) + "-" + secrets.token_hex(4)
    with tempfile.TemporaryDirectory(prefix="classcast-import-") as tmp:
        work = Path(tmp)
        process = await asyncio.create_subprocess_exec(
            *hls_argv(request.path, work, codecs, segment_s), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        _, err = await process.communicate()
        if process.returncode != 0:
            raise ImportFailed(f"ffmpeg could not convert {request.path}: "
                               f"{err.decode(errors='replace').strip()[-300:]}")
        text = await asyncio.to_thread((work / PLAYLIST).read_text, "utf-8")
        playlist = hls.parse(text)
        if not playlist.segments:
            raise ImportFailed(f"{request.path} gave no segments")
        pick = playlist.segments[min(THUMBNAIL_SEGMENT, len(playlist.segments) - 1)]
        thumbnail = await make_thumbnail(work / INIT, work / pick.uri, work / THUMBNAIL)
        uploader = Uploader(store, work, f"{prefix}/{lesson_id}",
                            RecorderMetrics(CollectorRegistry()))
        await uploader.sync(text)
        thumbnail_key = uploader.key(THUMBNAIL) if thumbnail else None
        if thumbnail_key:
            await store.put_file(thumbnail_key, work / THUMBNAIL, "image/jpeg")
        manifest = Manifest(
            id=lesson_id, room=request.room, lesson=request.lesson, started_at=started,
            ended_at=started + playlist.duration_s, duration_s=round(playlist.duration_s, 3),
            segments=len(playlist.segments),
            codecs={"video": "H264", **({"audio": "opus" if codecs["audio"] == "opus"
                                          else "AAC"} if "audio" in codecs else {})},
            bytes=uploader.state.bytes, status="complete", playlist=uploader.key(PLAYLIST),
            thumbnail=thumbnail_key,
            extra={"county": request.county, "description": request.description,
                   "tags": list(request.tags), "imported_from": request.path.name,
                   "video": "remuxed" if codecs["video"] == "h264" else "encoded"})
        await store.put_bytes(uploader.key("manifest.json"), manifest.to_json(),
                              "application/json")
    logger.info("imported %s as lesson %s (%.0f s, video %s)", request.path, lesson_id,
                manifest.duration_s, manifest.extra["video"])
    return manifest
