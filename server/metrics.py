"""The relay's Prometheus metrics, in a registry owned by one app (no process globals).

Names follow `classcast_<subsystem>_<name>_<unit>`; labels come from small fixed sets (kind,
role, reason), never room, peer or user ids.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from server.adaptation import Level

JOIN_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


class RelayMetrics:
    """Implements `forwarder.RelayTelemetry`; gauges are read from the rooms at scrape time."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.rooms_live = Gauge("classcast_relay_rooms_live", "Rooms with a publisher now.",
                                registry=registry)
        self.publishers = Gauge("classcast_relay_publishers", "Publisher sessions now.",
                                registry=registry)
        self.subscribers = Gauge("classcast_relay_subscribers", "Subscriber sessions now.",
                                 registry=registry)
        self.packets = Counter("classcast_relay_forwarded_packets_total",
                               "RTP packets forwarded to subscribers.", ["kind"],
                               registry=registry)
        self.octets = Counter("classcast_relay_forwarded_bytes_total",
                              "RTP payload bytes forwarded to subscribers.", ["kind"],
                              registry=registry)
        self.frames = Counter("classcast_relay_forwarded_frames_total",
                              "Encoded frames forwarded to subscribers.", ["kind"],
                              registry=registry)
        self.dropped = Counter("classcast_relay_dropped_frames_total",
                               "Frames not forwarded to a subscriber, by reason.",
                               ["kind", "reason"], registry=registry)
        self.keyframe_requests = Counter(
            "classcast_relay_keyframe_requests_total",
            "Keyframe requests (PLI) sent to publishers, by what asked for them.", ["reason"],
            registry=registry)
        self.retransmissions = Counter(
            "classcast_relay_retransmissions_total",
            "Packets classrooms asked for again (NACK): resent, or skipped as a repeat within "
            "the RTT, over the per-classroom budget, or no longer kept to resend.", ["outcome"],
            registry=registry)
        self.low_rendition_cpu = Counter(
            "classcast_relay_low_rendition_cpu_seconds_total",
            "CPU time spent decoding and re-encoding rooms' low renditions (the only codec "
            "work the relay does).", registry=registry)
        self.low_renditions = Gauge(
            "classcast_relay_low_renditions", "Rooms whose low rendition is being made now.",
            registry=registry)
        self.gop_replays = Counter(
            "classcast_relay_gop_replays_total",
            "Classrooms started from the frames since the last keyframe, because the source "
            "ignores keyframe requests.", registry=registry)
        self.classrooms_by_level = Gauge(
            "classcast_relay_classrooms_by_level",
            "Classrooms receiving the full stream, the low rendition or audio only, now.",
            ["level"], registry=registry)
        self.level_changes = Counter(
            "classcast_relay_level_changes_total",
            "Classrooms moved between levels by their link (or their own pin), by new level.",
            ["level"], registry=registry)
        self.join_latency = Histogram(
            "classcast_relay_join_latency_seconds",
            "From a classroom's WHEP offer to its first forwarded video frame.",
            buckets=JOIN_BUCKETS, registry=registry)
        self.sessions_closed = Counter(
            "classcast_relay_sessions_closed_total", "Peer sessions ended, by role and cause.",
            ["role", "cause"], registry=registry)
        self.requests_rejected = Counter(
            "classcast_http_rejected_requests_total",
            "Requests answered with an error status, by status.", ["status"],
            registry=registry)

        kinds = ("audio", "video")
        self._frames = {k: self.frames.labels(k) for k in kinds}
        self._packets = {k: self.packets.labels(k) for k in kinds}
        self._octets = {k: self.octets.labels(k) for k in kinds}

    def bind_counts(self, rooms_live: Callable[[], int], publishers: Callable[[], int],
                    subscribers: Callable[[], int]) -> None:
        self.rooms_live.set_function(rooms_live)
        self.publishers.set_function(publishers)
        self.subscribers.set_function(subscribers)

    # RelayTelemetry -------------------------------------------------------------------------
    def frame_forwarded(self, kind: str, packets: int, octets: int) -> None:
        # hot path (per frame per subscriber): pre-bound children
        self._frames[kind].inc()
        self._packets[kind].inc(packets)
        self._octets[kind].inc(octets)

    def frames_dropped(self, kind: str, reason: str, count: int) -> None:
        self.dropped.labels(kind, reason).inc(count)

    def keyframe_requested(self, reason: str) -> None:
        self.keyframe_requests.labels(reason).inc()

    def bind_low_renditions(self, running: Callable[[], int]) -> None:
        self.low_renditions.set_function(running)

    def bind_levels(self, count: Callable[[Level], int]) -> None:
        for level in Level:
            self.classrooms_by_level.labels(level.value).set_function(
                functools.partial(count, level))

    def level_changed(self, previous: Level, level: Level) -> None:
        self.level_changes.labels(level.value).inc()

    def transcoded(self, cpu_s: float) -> None:
        self.low_rendition_cpu.inc(cpu_s)

    def gop_replayed(self, frames: int) -> None:
        self.gop_replays.inc()

    def retransmission(self, outcome: str) -> None:
        self.retransmissions.labels(outcome).inc()

    def first_frame(self, latency_s: float) -> None:
        self.join_latency.observe(latency_s)

    def session_closed(self, role: str, cause: str) -> None:
        self.sessions_closed.labels(role, cause).inc()
