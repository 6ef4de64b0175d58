"""Streams a recording's closed segments from the spool to the bucket while it runs.

Order per pass: the init file (once ffmpeg has filled it), each segment the playlist lists that
is not stored yet, then the playlist itself: the playlist is the commit point, so the bucket
never lists a segment it does not hold. A stored segment is deleted from the spool (the spool
then only holds what S3 has not taken yet). Failures back off and retry; nothing is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from recorder import hls
from recorder.errors import StoreError
from recorder.metrics import RecorderMetrics
from recorder.segmenter import INIT, PLAYLIST
from recorder.store import ObjectStore

logger = logging.getLogger(__name__)

M3U8 = "application/vnd.apple.mpegurl"
MP4 = "video/mp4"
BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 10.0


@dataclass
class UploadState:
    stored: set[str] = field(default_factory=set)
    bytes: int = 0
    playlist_text: str = ""
    failures: int = 0


class Uploader:
    def __init__(self, store: ObjectStore, spool: Path, prefix: str,
                 metrics: RecorderMetrics) -> None:
        self.store = store
        self.spool = spool
        self.prefix = prefix.rstrip("/") + "/"
        self.metrics = metrics
        self.state = UploadState()
        self.keep: set[str] = set()  # stored segments to keep in the spool (thumbnail source)

    def key(self, name: str) -> str:
        return self.prefix + name

    async def sync(self, final_text: str | None = None) -> bool:
        """One pass; True when everything the playlist lists is stored, playlist included."""
        path = self.spool / PLAYLIST
        text = final_text if final_text is not None else await asyncio.to_thread(_read, path)
        if not text:
            return True
        playlist = hls.parse(text)
        names = ([playlist.map_uri] if playlist.map_uri else []) + [
            s.uri for s in playlist.segments]
        for name in names:
            if name in self.state.stored:
                continue
            local = self.spool / name
            size = await asyncio.to_thread(_size, local)
            if size is None:
                if name == INIT or name == playlist.map_uri:
                    return False  # ffmpeg has not written it yet
                # already stored by an earlier run (the spool only deletes stored segments)
                self.state.stored.add(name)
                continue
            if size == 0:
                return False  # ffmpeg writes init.mp4 empty first: never upload that
            closed_at = await asyncio.to_thread(_mtime, local)
            stored = await self.store.put_file(self.key(name), local, MP4)
            self.state.stored.add(name)
            self.state.bytes += stored
            self.metrics.uploaded(stored, time.time() - closed_at)
            if name != playlist.map_uri and name not in self.keep:
                await asyncio.to_thread(local.unlink, True)
        if text != self.state.playlist_text:
            await self.store.put_bytes(self.key(PLAYLIST), text.encode(), M3U8)
            self.state.playlist_text = text
        return True

    async def sync_until_done(self, final_text: str | None = None,
                              stop: asyncio.Event | None = None) -> bool:
        """Retry with backoff until one pass stores everything (or `stop` is set)."""
        delay = BACKOFF_START_S
        while True:
            try:
                if await self.sync(final_text):
                    return True
            except StoreError as exc:
                self.state.failures += 1
                self.metrics.upload_failed()
                logger.warning("upload of %s failed (%s); retrying in %.1f s", self.prefix,
                               exc, delay)
            if stop is not None and stop.is_set():
                return False
            await asyncio.sleep(delay)
            self.metrics.upload_retried()
            delay = min(delay * 2, BACKOFF_MAX_S)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def _mtime(path: Path) -> float:
    return path.stat().st_mtime
