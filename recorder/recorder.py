"""The recorder: starts and finishes recordings, keeps the spool within its disk budget, and
archives what a crash left behind."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from recorder.errors import DiskBudgetExceeded, NotRecording
from recorder.manifest import LessonInfo, LessonQuestion, Manifest
from recorder.metrics import RecorderMetrics
from recorder.recording import STATE, RecorderConfig, Recording
from recorder.segmenter import wait_for_orphan
from recorder.store import ObjectStore

logger = logging.getLogger(__name__)

Finished = Callable[[Manifest], Awaitable[None]]
WARN_FRACTION = 0.8


@dataclass(frozen=True)
class RecordingInfo:
    """What the API shows about a recording."""

    id: str
    room: str
    status: str
    started_at: float
    error: str | None
    upload_error: str | None
    segments_stored: int
    bytes_stored: int


class Recorder:
    def __init__(self, store: ObjectStore, spool_dir: Path, metrics: RecorderMetrics, *,
                 config: RecorderConfig = RecorderConfig(),
                 spool_budget_bytes: int = 2 << 30,
                 on_finished: Finished | None = None) -> None:
        self.store = store
        self.spool_dir = spool_dir
        self.config = config
        self.budget = spool_budget_bytes
        self.metrics = metrics
        self._on_finished = on_finished
        self._recordings: dict[str, Recording] = {}
        self._finishing: set[asyncio.Task[None]] = set()
        self._finishing_ids: set[str] = set()
        self._stop = asyncio.Event()
        self._spool_bytes = 0
        self._warned = False
        self._monitor: asyncio.Task[None] | None = None
        metrics.spool_budget.set(spool_budget_bytes)
        metrics.bind(active=lambda: sum(1 for r in self._recordings.values()
                                        if r.status == "recording"),
                     spool_bytes=lambda: self._spool_bytes)

    async def open(self) -> None:
        await asyncio.to_thread(self.spool_dir.mkdir, parents=True, exist_ok=True)
        self._monitor = asyncio.create_task(self._watch_spool(), name="spool-monitor")
        for spool in await asyncio.to_thread(self._leftovers):
            await wait_for_orphan(spool)
            recording, status = await asyncio.to_thread(
                Recording.from_spool, spool, self.store, self.config, self.metrics)
            logger.warning("recording %s of room %s was cut short by a restart; archiving it "
                           "as %s", recording.id, recording.room, status)
            self._recordings[recording.id] = recording
            self._spawn_finish(recording, status)

    def _leftovers(self) -> list[Path]:
        return sorted(p for p in self.spool_dir.iterdir() if (p / STATE).exists())

    # --- recordings -------------------------------------------------------------------------
    async def start(self, room: str, codecs: dict[str, str],
                    lesson: LessonInfo = LessonInfo()) -> Recording:
        if self._spool_bytes >= self.budget:
            raise DiskBudgetExceeded(
                f"the recording spool holds {self._spool_bytes} bytes, over its budget of "
                f"{self.budget}; the archive is unreachable or too slow (see upload metrics)")
        recording_id = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(4)
        recording = Recording(recording_id, room, lesson, codecs, self.spool_dir / recording_id,
                              self.store, self.config, self.metrics)
        self._recordings[recording_id] = recording
        try:
            await recording.start()
        except BaseException:
            self._recordings.pop(recording_id, None)
            await recording.finish("interrupted", self._stop)
            raise
        return recording

    def stop(self, recording_id: str, status: str = "complete",
             questions: tuple[LessonQuestion, ...] = ()) -> None:
        """Finish a recording in the background (its upload may outlast the call); the
        classrooms' `questions` go into its manifest."""
        recording = self._recordings.get(recording_id)
        if (recording is None or recording.status not in ("recording", "halted")
                or recording_id in self._finishing_ids):
            raise NotRecording(f"recording {recording_id} is not running")
        recording.questions = questions
        self._spawn_finish(recording, status)

    def _spawn_finish(self, recording: Recording, status: str) -> None:
        if recording.id in self._finishing_ids:
            return
        self._finishing_ids.add(recording.id)
        task = asyncio.create_task(self._finish(recording, status), name=f"finish-{recording.id}")
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    async def _finish(self, recording: Recording, status: str) -> None:
        try:
            manifest = await recording.finish(status, self._stop)
        finally:
            self._finishing_ids.discard(recording.id)
            if recording.status != "pending_upload":
                self._recordings.pop(recording.id, None)
        if manifest is not None and self._on_finished is not None:
            try:
                await self._on_finished(manifest)
            except Exception:
                logger.exception("catalog event for recording %s failed", recording.id)

    async def wait_finished(self) -> None:
        """Wait until every recording being finished is archived (tests, shutdown)."""
        while self._finishing:
            await asyncio.gather(*list(self._finishing), return_exceptions=True)

    def info(self, recording_id: str) -> RecordingInfo | None:
        r = self._recordings.get(recording_id)
        if r is None:
            return None
        return RecordingInfo(r.id, r.room, r.status, r.started_at, r.error, r.upload_error,
                             len(r.uploader.state.stored), r.uploader.state.bytes)

    # --- spool budget -----------------------------------------------------------------------
    async def _watch_spool(self) -> None:
        while True:
            self._spool_bytes = await asyncio.to_thread(_tree_size, self.spool_dir)
            if self._spool_bytes >= self.budget * WARN_FRACTION and not self._warned:
                self._warned = True
                logger.error("recording spool at %d of %d bytes: the archive is not keeping "
                             "up; recordings stop at the budget", self._spool_bytes, self.budget)
            elif self._spool_bytes < self.budget * WARN_FRACTION:
                self._warned = False
            if self._spool_bytes >= self.budget:
                for recording in list(self._recordings.values()):
                    await recording.halt(f"disk budget exceeded ({self._spool_bytes} bytes "
                                         f"spooled, budget {self.budget})")
            await asyncio.sleep(1.0)

    async def close(self) -> None:
        """Shutdown: running recordings end as interrupted; what S3 has not taken stays
        spooled for the next start."""
        for recording in list(self._recordings.values()):
            if recording.status in ("recording", "halted"):
                self._spawn_finish(recording, "interrupted")
        self._stop.set()
        await self.wait_finished()
        if self._monitor is not None:
            self._monitor.cancel()
            await asyncio.gather(self._monitor, return_exceptions=True)


def _tree_size(root: Path) -> int:
    total = 0
    for path in root.rglob("*"):
        try:
            if path.is_file():
                total += path.stat().st_size
        except OSError:
            continue
    return total
