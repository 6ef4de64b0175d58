"""Wires the recorder to the relay: a recording starts when a room goes live, joins the room as
an ordinary subscriber (a real aiortc peer over loopback UDP, through the same
`Relay.subscribe` as every classroom), and ends after the teacher has been gone for the grace
period."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from recorder.errors import DiskBudgetExceeded, RecorderError, UnsupportedCodec
from recorder.manifest import LessonInfo, LessonQuestion
from recorder.recorder import Recorder, RecordingInfo
from recorder.recording import Recording
from server import ice
from server.errors import Conflict, InsufficientStorage, Unprocessable
from server.passthrough import EncodedFrame, FrameAssembler, attach_receiver
from server.relay import Relay
from server.sessions import PeerSession

logger = logging.getLogger(__name__)

SUBJECT = "recorder"


class AskedQuestion(Protocol):
    """A classroom's question as the room's question board keeps it."""

    @property
    def classroom(self) -> str: ...

    @property
    def text(self) -> str: ...

    @property
    def asked_at(self) -> float: ...

    @property
    def answered_at(self) -> float | None: ...


class LessonSource(Protocol):
    """What the timetable says is being taught in a room (the attendance service)."""

    def lesson_for(self, room: str) -> LessonInfo | None: ...

    def recording_started(self, room: str, recording_id: str) -> None: ...


# (room, since) -> the questions asked in the room since then, taken off its board
TakeQuestions = Callable[[str, float], Sequence[AskedQuestion]]


class RecorderPeer:
    """The recorder's seat in a room."""

    def __init__(self, relay: Relay, room: str, recording: Recording) -> None:
        self._relay = relay
        self._room = room
        self._recording = recording
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.session: PeerSession | None = None

    async def start(self) -> None:
        room = self._relay.rooms.get(self._room)
        if room is None:
            raise Conflict(f"room {self._room!r} is not live")
        for kind in ("video", "audio"):
            track = room.tracks[kind]
            if track.codec is None or kind not in self._recording.codecs:
                continue
            transceiver = self.pc.addTransceiver(kind, direction="recvonly")
            assembler = FrameAssembler(kind, track.codec.name, self._sink(kind))
            attach_receiver(transceiver.receiver, assembler)
        with ice.host_addresses(("127.0.0.1",)):
            await self.pc.setLocalDescription(await self.pc.createOffer())
        answer = await self._relay.subscribe(self._room, self.pc.localDescription.sdp, SUBJECT,
                                             adapt=False)
        self.session = answer.session
        await self.pc.setRemoteDescription(RTCSessionDescription(answer.sdp, "answer"))

    def _sink(self, kind: str) -> Callable[[EncodedFrame], None]:
        recording = self._recording

        def sink(frame: EncodedFrame) -> None:
            recording.feed(kind, frame)

        return sink

    async def close(self) -> None:
        await self.pc.close()
        if self.session is not None:
            await self.session.close("recording_ended")


@dataclass
class RoomRecording:
    recording: Recording
    peer: RecorderPeer
    grace: asyncio.Task[None] | None = None


class RecordingService:
    """Implements the relay's room listener; owns the recorder peers and grace timers."""

    def __init__(self, relay: Relay, recorder: Recorder, *, auto_start: bool,
                 grace_s: float, manual_rooms: tuple[str, ...] = (),
                 questions: TakeQuestions | None = None,
                 lessons: LessonSource | None = None) -> None:
        self.relay = relay
        self.lessons = lessons
        self.recorder = recorder
        self.auto_start = auto_start
        self.manual_rooms = frozenset(manual_rooms)
        self.grace_s = grace_s
        self._take_questions = questions
        self._rooms: dict[str, RoomRecording] = {}
        self._errors: dict[str, str] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        relay.listeners.append(self)

    # --- relay events -----------------------------------------------------------------------
    def room_live(self, room: str) -> None:
        current = self._rooms.get(room)
        if current is not None and current.grace is not None:
            current.grace.cancel()
            current.grace = None
            logger.info("room %s: teacher back within the grace period; recording %s goes on",
                        room, current.recording.id)
        elif current is None and self.auto_start and room not in self.manual_rooms:
            self._spawn(self._auto_start(room), f"record-{room}")

    def room_not_live(self, room: str) -> None:
        current = self._rooms.get(room)
        if current is not None and current.grace is None:
            current.grace = asyncio.create_task(self._grace(room, current),
                                                name=f"grace-{room}")

    # --- control ----------------------------------------------------------------------------
    async def start(self, room: str, lesson: LessonInfo | None = None) -> Recording:
        if room in self._rooms:
            return self._rooms[room].recording
        live = self.relay.rooms.get(room)
        if live is None or not live.live:
            raise Conflict(f"room {room!r} is not live; recording starts with the lesson")
        # the camera and microphone are recorded; a shared screen is not (yet)
        codecs = {kind: t.codec.name for kind, t in live.tracks.items()
                  if kind in ("audio", "video") and t.codec and t.live}
        publisher = live.main_publisher
        teacher = publisher.subject if publisher else ""
        scheduled = self.lessons.lesson_for(room) if self.lessons is not None else None
        if scheduled is not None and not scheduled.teacher:
            scheduled = dataclasses.replace(scheduled, teacher=teacher)
        if lesson is not None and scheduled is not None:  # what the teacher left empty
            lesson = LessonInfo(**{f.name: getattr(lesson, f.name) or getattr(scheduled, f.name)
                                   for f in dataclasses.fields(LessonInfo)})
        info = lesson or scheduled or LessonInfo(teacher=teacher)
        try:
            recording = await self.recorder.start(room, codecs, info)
        except UnsupportedCodec as exc:
            self._errors[room] = str(exc)
            raise Unprocessable(str(exc)) from exc
        except DiskBudgetExceeded as exc:
            self._errors[room] = str(exc)
            raise InsufficientStorage(str(exc)) from exc
        peer = RecorderPeer(self.relay, room, recording)
        self._rooms[room] = RoomRecording(recording, peer)
        self._errors.pop(room, None)
        if self.lessons is not None:
            self.lessons.recording_started(room, recording.id)
        try:
            await peer.start()
        except BaseException:
            await self.stop(room, "interrupted")
            raise
        return recording

    async def stop(self, room: str, status: str = "complete") -> None:
        current = self._rooms.pop(room, None)
        if current is None:
            raise Conflict(f"room {room!r} is not being recorded")
        if current.grace is not None and current.grace is not asyncio.current_task():
            current.grace.cancel()
        try:
            self.recorder.stop(current.recording.id, status, self._questions(room, current))
        except RecorderError as exc:
            logger.warning("room %s: %s", room, exc)
        await current.peer.close()

    def status(self, room: str) -> tuple[RecordingInfo | None, str | None]:
        current = self._rooms.get(room)
        info = self.recorder.info(current.recording.id) if current else None
        return info, self._errors.get(room)

    # --- tasks ------------------------------------------------------------------------------
    async def _auto_start(self, room: str) -> None:
        try:
            await self.start(room)
        except (Conflict, Unprocessable, InsufficientStorage, RecorderError) as exc:
            logger.error("room %s is live but not recorded: %s",
                         room, getattr(exc, "message", exc))
            self._errors[room] = str(getattr(exc, "message", exc))

    async def _grace(self, room: str, current: RoomRecording) -> None:
        await asyncio.sleep(self.grace_s)
        if self._rooms.get(room) is current:
            logger.info("room %s: teacher gone for %.0f s; finishing recording %s", room,
                        self.grace_s, current.recording.id)
            await self.stop(room)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _questions(self, room: str, current: RoomRecording) -> tuple[LessonQuestion, ...]:
        """The classrooms' questions of this recording, taken off the room's board."""
        if self._take_questions is None:
            return ()
        asked = self._take_questions(room, current.recording.started_at)
        return tuple(LessonQuestion(q.classroom, q.text, q.asked_at, q.answered_at)
                     for q in asked)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for room in list(self._rooms):
            current = self._rooms.pop(room)
            # shutdown: the recorder archives it as interrupted, with its questions
            current.recording.questions = self._questions(room, current)
            if current.grace is not None:
                current.grace.cancel()
                await asyncio.gather(current.grace, return_exceptions=True)
            await current.peer.close()
        await self.recorder.close()
