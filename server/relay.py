"""The relay: turns WHIP/WHEP offers into peer sessions wired to rooms.

A publisher's receivers hand complete encoded frames to the room's tracks (no decoding); a
subscriber's senders repacketize nothing and encode nothing (see `server.passthrough`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Protocol

from aiortc import RTCRtpTransceiver, RTCSessionDescription
from aiortc.exceptions import InternalError, InvalidAccessError, OperationError
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from server import ice, sdp
from server.adaptation import Level, LevelInfo, Thresholds
from server.adapter import ClassroomAdapter
from server.errors import Conflict, NotFound, ServiceUnavailable, Unprocessable
from server.forwarder import SubscriberTrack, same_codec
from server.metrics import RelayMetrics
from server.passthrough import FrameAssembler, attach_receiver, attach_sender, request_keyframe
from server.rooms import Room, RoomInfo, Rooms, slots_of
from server.sessions import PeerSession, Role
from server.settings import Settings

logger = logging.getLogger(__name__)


class RoomListener(Protocol):
    """Told when a room's lesson starts and stops (e.g. the recording service)."""

    def room_live(self, room: str) -> None: ...

    def room_not_live(self, room: str) -> None: ...


class SubscriberListener(Protocol):
    """Told when a subscriber starts receiving (its first video frame, or its answer when the
    room has no video) and when its session ends (e.g. attendance)."""

    def subscriber_joined(self, session: PeerSession) -> None: ...

    def subscriber_left(self, session: PeerSession) -> None: ...


@dataclass(frozen=True)
class Answer:
    session: PeerSession
    sdp: str


class Relay:
    def __init__(self, settings: Settings, metrics: RelayMetrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self.rooms = Rooms(settings.relay, metrics)
        self.sessions: dict[str, PeerSession] = {}
        self.listeners: list[RoomListener] = []
        self.subscriber_listeners: list[SubscriberListener] = []
        self.adapters: dict[str, ClassroomAdapter] = {}  # by session id
        metrics.bind_counts(
            rooms_live=lambda: sum(1 for r in self.rooms if r.live),
            publishers=lambda: sum(len(r.publishers) for r in self.rooms),
            subscribers=lambda: sum(len(r.subscribers) for r in self.rooms))
        metrics.bind_low_renditions(lambda: sum(
            1 for r in self.rooms if r.low is not None and r.low.running))
        metrics.bind_levels(lambda level: sum(
            1 for a in self.adapters.values() if a.controller.level == level))

    # --- publish ----------------------------------------------------------------------------
    async def publish(self, room_name: str, offer_text: str, subject: str) -> Answer:
        offer = sdp.parse_offer(offer_text)
        sdp.require_publishable(offer)
        slots = slots_of([m.kind for m in offer.media])
        room = self.rooms.get(room_name)
        current = room.main_publisher if room is not None else None
        if current is not None:
            if current.subject != subject:
                raise Conflict(f"room {room_name!r} already has a teacher publishing; end that "
                               "session first (DELETE its Location)")
            # The same teacher again: a reconnect after a network drop, while the old session
            # has not timed out yet. The new session takes over; classrooms stay connected.
            logger.info("room %s: teacher %s reconnected; replacing session %s", room_name,
                        subject, current.id[:8])
            await current.close("replaced")
        session = PeerSession(room_name, Role.PUBLISHER, subject,
                              self._settings.ice.connect_timeout_s,
                              max_bundle=slots.count("screen") > 0)
        room = self.rooms.get_or_create(room_name)
        room.publishers.append(session)
        self.sessions[session.id] = session
        generations: dict[str, int] = {}

        async def closed(session: PeerSession) -> None:
            await self._publisher_closed(session, generations)

        session.on_close(closed)
        try:
            wiring: list[tuple[str, RTCRtpTransceiver, RTCRtpCodecParameters]] = []
            for m, slot in zip(offer.media, slots, strict=True):
                assert m.codec is not None and slot is not None
                transceiver = session.pc.addTransceiver(m.kind, direction="recvonly")
                transceiver.setCodecPreferences(sdp.capabilities(m.codec))
                wiring.append((slot, transceiver, m.codec))
            answer = await self._negotiate(session, sdp.without_bandwidth_feedback(offer.text))
            for slot, transceiver, codec in wiring:
                generations[slot] = self._feed(room, slot, transceiver, codec)
        except BaseException:
            await session.close("rejected")
            raise
        if room.live_since is None:
            room.live_since = time.time()
        session.start_watchdog()
        for listener in self.listeners:
            listener.room_live(room_name)
        logger.info("room %s: teacher %s publishing (%s)", room_name, session.id[:8],
                    ", ".join(f"{slot} {m.codec.mimeType}" for m, slot
                              in zip(offer.media, slots, strict=True) if m.codec))
        return Answer(session, sdp.with_opus_fec(answer))

    def _feed(self, room: Room, slot: str, transceiver: RTCRtpTransceiver,
              codec: RTCRtpCodecParameters) -> int:
        """Route a publisher transceiver's frames into the room track; returns the generation."""
        track = room.tracks[slot]
        receiver = transceiver.receiver
        if track.codec is not None and not same_codec(track.codec, codec):
            logger.info("room %s: teacher switched %s codec to %s; classrooms must rejoin",
                        room.name, transceiver.kind, codec.mimeType)
            for sub in list(room.subscribers.values()):
                sub.begin_close("codec_changed")

        async def keyframe() -> None:
            if assembler.media_ssrc is not None:
                await request_keyframe(receiver, assembler.media_ssrc)

        generation = track.attach_source(codec, keyframe)
        # Classrooms that asked for this line but joined before it had media (e.g. the teacher
        # shares a screen now) rejoin to get it; they reconnect by themselves.
        for sub in list(room.subscribers.values()):
            sent = sub.sent_codecs.get(slot)
            if (slot in sub.wanted_slots and (sent is None or not same_codec(sent, codec))
                    and not sub.closed):
                logger.info("room %s: %s appeared; classroom %s rejoins for it", room.name,
                            slot, sub.id[:8])
                sub.begin_close("tracks_changed")
        assembler = FrameAssembler(transceiver.kind, codec.name,
                                   lambda frame: track.push(frame, generation),
                                   loss_wait_s=self._settings.relay.loss_wait_s)
        attach_receiver(receiver, assembler)
        return generation

    async def _publisher_closed(self, session: PeerSession, generations: dict[str, int]) -> None:
        self.sessions.pop(session.id, None)
        self._metrics.session_closed("publisher", session.close_cause or "unknown")
        room = self.rooms.get(session.room)
        if room is None:
            return
        if session in room.publishers:
            room.publishers.remove(session)
        for kind, generation in generations.items():
            room.tracks[kind].detach_source(generation)
        if not room.live:
            room.live_since = None
            for listener in self.listeners:
                listener.room_not_live(room.name)
        await self.rooms.discard_if_idle(room)

    # --- subscribe --------------------------------------------------------------------------
    async def subscribe(self, room_name: str, offer_text: str, subject: str,
                        adapt: bool = True) -> Answer:
        """A classroom (or the recorder) joins. With `adapt`, its camera video follows its
        link: full stream, low rendition or audio only (`server.adapter`); the recorder
        always takes the full stream."""
        started = time.monotonic()
        room = self.rooms.get(room_name)
        if room is None or not room.live:  # checked first: cheap for classrooms that poll
            raise Conflict(f"the lesson in room {room_name!r} has not started yet; try again "
                           "shortly",
                           headers={"Retry-After": str(self._settings.relay.retry_after_s)})
        if sum(len(r.subscribers) for r in self.rooms) >= self._settings.relay.max_subscribers:
            raise ServiceUnavailable(
                "this server is serving as many classrooms as it can; try again shortly",
                headers={"Retry-After": str(self._settings.relay.retry_after_s)})
        offer = sdp.parse_offer(offer_text)
        sdp.require_playable(offer)
        slots = slots_of([m.kind for m in offer.media])
        session = PeerSession(room_name, Role.SUBSCRIBER, subject,
                              self._settings.ice.connect_timeout_s,
                              max_bundle=slots.count("screen") > 0)
        session.wanted_slots = frozenset(s for s in slots if s is not None)
        room.subscribers[session.id] = session
        self.sessions[session.id] = session
        tracks: list[SubscriberTrack] = []

        async def closed(session: PeerSession) -> None:
            await self._subscriber_closed(session, tracks)

        session.on_close(closed)
        try:
            sent: dict[str, RTCRtpCodecParameters] = {}
            for m, slot in zip(offer.media, slots, strict=True):
                room_track = room.tracks[slot] if slot is not None else None
                codec = room_track.codec if room_track is not None else None
                if slot == "screen" and codec is None:
                    # No screen shared yet: the line waits pinned to the camera's codec, so a
                    # screen shared later in that codec reaches this classroom without a rejoin.
                    # (An inactive m-line beside Chromium's bundled ones leaves aiortc's answer
                    # without ICE candidates: measured with Chromium 156.)
                    codec = room.tracks["video"].codec
                if room_track is None or codec is None:
                    session.pc.addTransceiver(m.kind, direction="inactive")
                    continue
                assert slot is not None
                sent[slot] = codec
                on_first = (lambda: self._first_frame(session, started)
                            ) if slot == "video" else None
                track = room_track.subscribe(on_first_frame=on_first)
                tracks.append(track)
                transceiver = session.pc.addTransceiver(track, direction="sendonly")
                transceiver.setCodecPreferences(sdp.capabilities(codec))
                attach_sender(transceiver.sender, track, track.request_keyframe,
                              track.retransmits.allow)
            session.sent_codecs = sent
            answer = await self._negotiate(session, offer.text)
        except BaseException:
            await session.close("rejected")
            raise
        session.start_watchdog()
        camera = next((t for t in tracks if t.source is room.tracks["video"]), None)
        if camera is not None and adapt and self._settings.relay.adapt:
            relay = self._settings.relay
            adapter = ClassroomAdapter(session, camera, room, relay.adapt_interval_s,
                                       self._metrics.level_changed,
                                       Thresholds(up_after_s=relay.adapt_up_after_s))
            self.adapters[session.id] = adapter
            adapter.start()
        if not any(t.kind == "video" for t in tracks):
            for sub_listener in self.subscriber_listeners:
                sub_listener.subscriber_joined(session)
        return Answer(session, answer)

    def _first_frame(self, session: PeerSession, started: float) -> None:
        self._metrics.first_frame(time.monotonic() - started)
        if session.closed:
            return
        for listener in self.subscriber_listeners:
            listener.subscriber_joined(session)

    async def _subscriber_closed(self, session: PeerSession,
                                 tracks: list[SubscriberTrack]) -> None:
        self.sessions.pop(session.id, None)
        self._metrics.session_closed("subscriber", session.close_cause or "unknown")
        for listener in self.subscriber_listeners:
            listener.subscriber_left(session)
        adapter = self.adapters.pop(session.id, None)
        if adapter is not None:
            await adapter.close()
        for track in tracks:
            track.stop()
        room = self.rooms.get(session.room)
        if room is None:
            return
        room.subscribers.pop(session.id, None)
        await self.rooms.discard_if_idle(room)

    # --- common -----------------------------------------------------------------------------
    async def _negotiate(self, session: PeerSession, offer_text: str) -> str:
        pc = session.pc
        try:
            await pc.setRemoteDescription(RTCSessionDescription(
                sdp.with_bundled_candidates(sdp.without_mdns_candidates(offer_text)), "offer"))
        except (OperationError, InvalidAccessError, InternalError, ValueError) as exc:
            raise Unprocessable(f"the offer cannot be negotiated: {exc or type(exc).__name__}; "
                                "the relay forwards the teacher's codec unchanged, so the "
                                "player must support it") from exc
        with ice.host_addresses(self._settings.ice.addresses):
            await pc.setLocalDescription(await pc.createAnswer())
        return str(pc.localDescription.sdp)

    def session(self, room: str, session_id: str, role: Role) -> PeerSession:
        session = self.sessions.get(session_id)
        if session is None or session.room != room or session.role is not role:
            raise NotFound(f"no {role} session {session_id!r} in room {room!r}; it may have "
                           "ended already")
        return session

    async def trickle(self, session: PeerSession, fragment: sdp.SdpFragment) -> None:
        for candidate in fragment.candidates:
            if candidate.sdpMid is None and candidate.sdpMLineIndex is None:
                candidate.sdpMLineIndex = 0
            try:
                await session.pc.addIceCandidate(candidate)
            except (ValueError, OperationError, InvalidAccessError):
                continue  # unusable candidates are dropped silently
        if fragment.end_of_candidates:
            await session.pc.addIceCandidate(None)

    def room_info(self, name: str) -> RoomInfo:
        room = self.rooms.get(name)
        if room is None:
            raise NotFound(f"room {name!r} has no lesson now")
        return room.info(self.level_info)

    def room_infos(self) -> list[RoomInfo]:
        return sorted((room.info(self.level_info) for room in self.rooms), key=lambda r: r.name)

    def level_info(self, session_id: str) -> LevelInfo | None:
        adapter = self.adapters.get(session_id)
        return adapter.info if adapter is not None else None

    def pin_level(self, session: PeerSession, ceiling: Level | None) -> LevelInfo:
        """A classroom's own ceiling ("低流量模式"): never above it, lower if its link says so."""
        adapter = self.adapters.get(session.id)
        if adapter is None:
            raise Conflict("this session receives no camera video, so it has no level to pin")
        adapter.pin(ceiling)
        return adapter.info

    async def close(self) -> None:
        await asyncio.gather(*(s.close("shutdown") for s in list(self.sessions.values())),
                             return_exceptions=True)
        for adapter in list(self.adapters.values()):
            await adapter.close()
        self.adapters.clear()
        for room in self.rooms:
            await room.close()
