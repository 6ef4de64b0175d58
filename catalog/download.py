"""A lesson as one MP4 file: remuxed from its HLS segments with ffmpeg `-c copy` on first
request, then kept in the bucket beside them (`lesson.mp4`)."""

from __future__ import annotations

import asyncio
import logging
import tempfile
from pathlib import Path

import ffmpeg

from catalog.errors import CatalogError
from catalog.models import Lesson
from catalog.store import ArchiveStore

logger = logging.getLogger(__name__)

DOWNLOAD = "lesson.mp4"


class DownloadFailed(CatalogError):
    code = "download_failed"


class Downloads:
    """Builds each lesson's MP4 at most once at a time (concurrent requests share it)."""

    def __init__(self, store: ArchiveStore) -> None:
        self.store = store
        self._building: dict[str, asyncio.Task[str]] = {}

    async def ensure(self, lesson: Lesson) -> str:
        """The object key of the lesson's MP4, built and stored if it is not there yet."""
        key = lesson.prefix + DOWNLOAD
        if await self.store.size(key) is not None:
            return key
        task = self._building.get(lesson.id)
        if task is None:
            task = asyncio.create_task(self._build(lesson, key), name=f"mp4-{lesson.id}")
            self._building[lesson.id] = task
            task.add_done_callback(lambda _: self._building.pop(lesson.id, None))
        return await asyncio.shield(task)

    async def _build(self, lesson: Lesson, key: str) -> str:
        with tempfile.TemporaryDirectory(prefix="classcast-mp4-") as tmp:
            work = Path(tmp)
            names = [k.rsplit("/", 1)[-1] for k in await self.store.list_keys(lesson.prefix)]
            for name in names:
                if name == "index.m3u8" or name == "init.mp4" or name.endswith(".m4s"):
                    data = await self.store.get_bytes(lesson.prefix + name)
                    await asyncio.to_thread((work / name).write_bytes, data)
            out = work / DOWNLOAD
            argv = (ffmpeg.input(str(work / "index.m3u8"))
                    .output(str(out), c="copy", movflags="+faststart")
                    .global_args("-hide_banner", "-loglevel", "error", "-nostdin")
                    .overwrite_output().compile())
            process = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE)
            _, err = await process.communicate()
            if process.returncode != 0:
                raise DownloadFailed(f"ffmpeg could not join lesson {lesson.id}: "
                                     f"{err.decode(errors='replace').strip()[-300:]}")
            size = await self.store.put_file(key, out, "video/mp4")
            logger.info("catalog: lesson %s joined into one MP4 (%d bytes)", lesson.id, size)
        return key

    async def close(self) -> None:
        tasks = list(self._building.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
