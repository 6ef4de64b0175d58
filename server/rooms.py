"""Rooms: one live lesson channel each, with its publishers, subscribers and media lines."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from server.adaptation import LevelInfo
from server.forwarder import RelayTelemetry, RoomTrack
from server.sessions import PeerSession
from server.settings import RelaySettings
from server.transcode import LowRendition, LowSpec

KINDS = ("audio", "video")
# A room's media lines ("slots") and their kinds: the teacher's camera and microphone, and an
# optional second video line for a shared screen (slides, blackboard camera).
SLOTS = {"audio": "audio", "video": "video", "screen": "video"}


def slots_of(kinds: list[str]) -> list[str | None]:
    """The slot of each m-line, in order: the first video line is the camera, the second the
    screen, the first audio line the microphone; None for any line beyond those."""
    taken: list[str | None] = []
    for kind in kinds:
        free = [s for s, k in SLOTS.items() if k == kind and s not in taken]
        taken.append(free[0] if free else None)
    return taken


@dataclass(frozen=True)
class TrackInfo:
    kind: str
    codec: str | None
    live: bool
    subscribers: int
    slot: str  # "audio", "video" (the camera) or "screen"


@dataclass(frozen=True)
class SessionInfo:
    id: str
    subject: str
    state: str
    connected_for_s: float | None
    level: LevelInfo | None = None  # a classroom's: full stream, low rendition or audio only


@dataclass(frozen=True)
class RoomInfo:
    """What `GET /api/rooms/{room}` shows (a frozen snapshot, safe to serialize)."""

    name: str
    live: bool
    live_since: float | None
    publishers: tuple[SessionInfo, ...]
    subscribers: tuple[SessionInfo, ...]
    tracks: tuple[TrackInfo, ...]

    @property
    def subscriber_count(self) -> int:
        return len(self.subscribers)


class Room:
    def __init__(self, name: str, *, video_queue: int, audio_queue: int,
                 keyframe_interval_s: float, join_keyframe_interval_s: float,
                 telemetry: RelayTelemetry, low: LowSpec | None = None) -> None:
        self.name = name
        self.publishers: list[PeerSession] = []
        self.subscribers: dict[str, PeerSession] = {}
        self.live_since: float | None = None
        self.tracks = {slot: RoomTrack(kind, video_queue=video_queue, audio_queue=audio_queue,
                                       keyframe_interval_s=keyframe_interval_s,
                                       join_keyframe_interval_s=join_keyframe_interval_s,
                                       telemetry=telemetry)
                       for slot, kind in SLOTS.items()}
        # The camera again at 360p / 150 kbit/s for classrooms on weak links, made by the
        # relay only while one needs it (`server.transcode`).
        self.low: LowRendition | None = None
        if low is not None:
            low_track = RoomTrack("video", video_queue=video_queue, audio_queue=audio_queue,
                                  keyframe_interval_s=keyframe_interval_s,
                                  join_keyframe_interval_s=join_keyframe_interval_s,
                                  telemetry=telemetry)
            self.low = LowRendition(self.tracks["video"], low_track, low)

    @property
    def main_publisher(self) -> PeerSession | None:
        return self.publishers[0] if self.publishers else None

    @property
    def live(self) -> bool:
        return any(track.live for track in self.tracks.values())

    @property
    def idle(self) -> bool:
        return not self.publishers and not self.subscribers

    def info(self, level_of: Callable[[str], LevelInfo | None] = lambda _: None) -> RoomInfo:
        now = time.monotonic()

        def session(s: PeerSession) -> SessionInfo:
            return SessionInfo(s.id, s.subject, s.state,
                               None if s.connected_at is None else round(now - s.connected_at, 1),
                               level_of(s.id))

        return RoomInfo(
            name=self.name, live=self.live,
            live_since=self.live_since,
            publishers=tuple(session(s) for s in self.publishers),
            subscribers=tuple(session(s) for s in self.subscribers.values()),
            tracks=tuple(TrackInfo(t.kind, t.codec.mimeType if t.codec else None, t.live,
                                   t.subscriber_count, slot)
                         for slot, t in self.tracks.items()
                         if slot != "screen" or t.codec is not None))

    async def close(self) -> None:
        if self.low is not None:
            await self.low.close()
            await self.low.target.close()
        for track in self.tracks.values():
            await track.close()


class Rooms:
    """The registry of rooms that have a publisher or subscribers now."""

    def __init__(self, settings: RelaySettings, telemetry: RelayTelemetry) -> None:
        self._rooms: dict[str, Room] = {}
        self._settings = settings
        self._telemetry = telemetry

    def get(self, name: str) -> Room | None:
        return self._rooms.get(name)

    def get_or_create(self, name: str) -> Room:
        room = self._rooms.get(name)
        if room is None:
            s = self._settings
            room = Room(name, video_queue=s.video_queue_frames, audio_queue=s.audio_queue_frames,
                        keyframe_interval_s=s.keyframe_interval_s,
                        join_keyframe_interval_s=s.join_keyframe_interval_s,
                        telemetry=self._telemetry,
                        low=LowSpec(height=s.low_height, kbps=s.low_kbps,
                                    keyframe_s=s.low_keyframe_s, idle_s=s.low_idle_s)
                        if s.adapt else None)
            self._rooms[name] = room
        return room

    async def discard_if_idle(self, room: Room) -> None:
        if room.idle and self._rooms.get(room.name) is room:
            del self._rooms[room.name]
            await room.close()

    def __iter__(self) -> Iterator[Room]:
        return iter(list(self._rooms.values()))

    def __len__(self) -> int:
        return len(self._rooms)
