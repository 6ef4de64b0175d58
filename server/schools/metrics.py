"""Schools metrics: who is connected where, lessons live and late, coverage, minutes delivered
and link quality. Names follow `classcast_schools_<name>_<unit>`; the only labels are county,
school and role, whose values come from the registry (a bounded set), never peer or user ids.

Gauges that describe "now" are computed at scrape time from a snapshot the attendance service
hands over, so a county that has no lesson any more simply disappears instead of lingering."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

RTT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0)
LOSS_BUCKETS = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
JOIN_BUCKETS = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


@dataclass(frozen=True)
class LiveState:
    """What the gauges show now."""

    classrooms: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (county, school)
    lessons_live: Mapping[str, int] = field(default_factory=dict)  # by the room's county
    lessons_late: Mapping[str, int] = field(default_factory=dict)
    lessons_without_teacher: Mapping[str, int] = field(default_factory=dict)


class _LiveCollector(Collector):
    def __init__(self, state: Callable[[], LiveState]) -> None:
        self._state = state

    def collect(self) -> Iterable[GaugeMetricFamily]:
        state = self._state()
        connected = GaugeMetricFamily(
            "classcast_schools_classrooms_connected",
            "Registered classrooms receiving a lesson now, by county and school.",
            labels=["county", "school"])
        for (county, school), count in sorted(state.classrooms.items()):
            connected.add_metric([county, school], count)
        yield connected
        for name, help_text, values in (
                ("classcast_schools_lessons_live",
                 "Scheduled lessons whose room is live now, by the room's county.",
                 state.lessons_live),
                ("classcast_schools_lessons_late",
                 "Scheduled lessons past their start (plus schools.late_after_s) whose room "
                 "never went live, by the room's county.", state.lessons_late),
                ("classcast_schools_lessons_without_teacher",
                 "Scheduled lessons inside their time slot that went live and whose teacher "
                 "is not publishing now, by the room's county.",
                 state.lessons_without_teacher)):
            family = GaugeMetricFamily(name, help_text, labels=["county"])
            for county, count in sorted(values.items()):
                family.add_metric([county], count)
            yield family

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return []


class SchoolMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._state: Callable[[], LiveState] = LiveState
        registry.register(_LiveCollector(lambda: self._state()))
        self.coverage = Gauge(
            "classcast_schools_coverage_ratio",
            "Share of the target classrooms of this county that watched enough "
            "(schools.coverage_share) of the last finished lesson that targeted the county.",
            ["county"], registry=registry)
        self.minutes = Counter(
            "classcast_schools_delivered_minutes_total",
            "Minutes of live lesson received by registered classrooms, by their county.",
            ["county"], registry=registry)
        self.lessons_finished = Counter(
            "classcast_schools_lessons_finished_total",
            "Scheduled lessons that went live and ended, by the room's county.", ["county"],
            registry=registry)
        self.rtt = Histogram(
            "classcast_schools_rtt_seconds",
            "Round-trip time to classrooms, from their receiver reports (one sample per "
            "classroom per schools.sample_interval_s).", ["county"], buckets=RTT_BUCKETS,
            registry=registry)
        self.loss = Histogram(
            "classcast_schools_loss_ratio",
            "Fraction of packets lost on the way to classrooms, from their receiver reports.",
            ["county"], buckets=LOSS_BUCKETS, registry=registry)
        self.join_latency = Histogram(
            "classcast_schools_join_latency_seconds",
            "From a registered classroom's WHEP offer to its first video frame.", ["county"],
            buckets=JOIN_BUCKETS, registry=registry)

    def bind(self, state: Callable[[], LiveState]) -> None:
        self._state = state
