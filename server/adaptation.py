"""What each classroom should receive, from what its link says: the full stream, the low
rendition, or audio only.

A `LevelController` per classroom takes one `LinkSample` a second (the classroom's REMB
estimate, the loss its receiver reports, how many packets it asked for again, RTT) and steps
down when two samples in a row show congestion, and up only after a quiet period that
doubles each time a step up fails (congestion soon after it). A classroom may pin a ceiling
("低流量模式"); the controller never goes above it but may still go below.

A receiver's estimate (REMB) cannot run far ahead of what it receives: it climbs a few
percent a second above its incoming rate and drops when it sees queues building. So an
estimate below what a level sends means congestion only while it is not climbing, and a
step up cannot wait for the estimate to make room: it is a probe, judged by the loss and
NACKs (and the estimate's direction) that follow.
This module is logic only: `server.adapter` feeds it and carries out its decisions."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from dataclasses import dataclass


class Level(enum.StrEnum):
    FULL = "full"
    LOW = "low"
    AUDIO = "audio"


ORDER = (Level.FULL, Level.LOW, Level.AUDIO)  # best first

REMB_MIN_BPS = 8_000.0  # below this (0, negative, garbage) a REMB is not believed
REMB_MAX_BPS = 1e9


@dataclass(frozen=True)
class LinkSample:
    at: float  # monotonic seconds
    remb_bps: float | None = None  # the classroom's latest receiver estimate
    loss: float | None = None  # fraction lost, from its latest receiver report
    nack_ratio: float | None = None  # packets NACKed / packets sent in the last interval
    rtt_s: float | None = None


@dataclass(frozen=True)
class LevelInfo:
    """A classroom's level as `GET /api/rooms/{room}` and its page show it."""

    level: str
    reason: str
    pinned: str | None  # the ceiling the classroom chose, if any
    changes: int


@dataclass(frozen=True)
class Decision:
    level: Level
    reason: str


@dataclass(frozen=True)
class Thresholds:
    down_loss: float = 0.08  # a loss this high is congestion
    down_nack: float = 0.10
    # congestion: REMB below this share of the level's bitrate. A receiver that sees a queue
    # building once answers with 0.85x its incoming rate, which is no reason to move (a busy
    # receiver on a clean link does that: measured with 20 aiortc classrooms on loopback).
    remb_margin: float = 0.7
    remb_rising: float = 1.02  # an estimate this much above the last one is still climbing
    clean_loss: float = 0.02  # a sample this clean counts towards the quiet period
    clean_nack: float = 0.03
    down_after: int = 2  # congested samples in a row before stepping down
    up_after_s: float = 8.0  # first quiet period before a step up
    up_after_max_s: float = 64.0
    failed_within_s: float = 6.0  # congestion this soon after a step up: the probe failed
    remb_warmup_s: float = 5.0  # a receiver's estimate starts low and ramps: not believed yet


class LevelController:
    def __init__(self, bitrate_bps: Callable[[Level], float | None],
                 available: Callable[[Level], bool] = lambda level: True,
                 thresholds: Thresholds | None = None, start: Level = Level.FULL) -> None:
        """`bitrate_bps(level)`: what that level sends now (None: unknown); `available(level)`:
        whether the room can offer it (no low rendition for a codec it cannot encode)."""
        self._bitrate = bitrate_bps
        self._available = available
        self._t = thresholds or Thresholds()
        self.level = start
        self.reason = "start"
        self.pinned: Level | None = None
        self._congested = 0
        self._quiet_since: float | None = None
        self._up_after_s = self._t.up_after_s
        self._stepped_up_at: float | None = None
        self._first_sample_at: float | None = None
        self._last_remb: float | None = None

    def pin(self, ceiling: Level | None, now: float) -> Decision | None:
        """The classroom's own choice: never above `ceiling` (None: no limit)."""
        self.pinned = ceiling
        if ceiling is not None and ORDER.index(self.level) < ORDER.index(ceiling):
            return self._move(ceiling, "pinned by the classroom", now)
        if ceiling is None:
            self._quiet_since = now  # free to climb again after a quiet period
        return None

    def update(self, sample: LinkSample) -> Decision | None:
        """Feed one sample; a Decision when the level changes."""
        if self._first_sample_at is None:
            self._first_sample_at = sample.at
        if sample.at - self._first_sample_at < self._t.remb_warmup_s:
            sample = dataclasses.replace(sample, remb_bps=None)
        remb = _believable(sample.remb_bps)
        climbing = remb is not None and self._last_remb is not None \
            and remb > self._last_remb * self._t.remb_rising
        falling = remb is not None and self._last_remb is not None and remb < self._last_remb
        if remb is not None:
            self._last_remb = remb
        why = self._congestion(sample, remb, climbing)
        if why is not None:
            self._quiet_since = None
            self._congested += 1
            if self._congested >= self._t.down_after:
                lower = self._next(down=True)
                if lower is not None:
                    if (self._stepped_up_at is not None
                            and sample.at - self._stepped_up_at < self._t.failed_within_s):
                        self._up_after_s = min(self._up_after_s * 2, self._t.up_after_max_s)
                    return self._move(lower, why, sample.at)
            return None
        self._congested = 0
        if self._stepped_up_at is not None \
                and sample.at - self._stepped_up_at >= self._t.failed_within_s:
            self._up_after_s = self._t.up_after_s  # the step up held: back to the short wait
            self._stepped_up_at = None
        if not self._clean(sample) or falling:
            self._quiet_since = None
            return None
        if self._quiet_since is None:
            self._quiet_since = sample.at
            return None
        higher = self._next(down=False)
        if higher is None or sample.at - self._quiet_since < self._up_after_s:
            return None
        return self._move(higher, f"link quiet for {sample.at - self._quiet_since:.0f} s",
                          sample.at, up=True)

    def _congestion(self, sample: LinkSample, remb: float | None,
                    climbing: bool) -> str | None:
        t = self._t
        if sample.loss is not None and sample.loss >= t.down_loss:
            return f"loss {sample.loss:.0%}"
        if sample.nack_ratio is not None and sample.nack_ratio >= t.down_nack:
            return f"{sample.nack_ratio:.0%} of packets asked for again"
        sending = self._bitrate(self.level)
        if remb is not None and sending and self.level != Level.AUDIO and not climbing \
                and remb < sending * t.remb_margin:
            return f"estimate {remb / 1000:.0f} kbps < {sending / 1000:.0f} kbps sent"
        return None

    def _clean(self, sample: LinkSample) -> bool:
        return ((sample.loss is None or sample.loss <= self._t.clean_loss)
                and (sample.nack_ratio is None or sample.nack_ratio <= self._t.clean_nack))

    def _next(self, down: bool) -> Level | None:
        index = ORDER.index(self.level)
        steps = ORDER[index + 1:] if down else reversed(ORDER[:index])
        for level in steps:
            if not down and self.pinned is not None \
                    and ORDER.index(level) < ORDER.index(self.pinned):
                return None
            if self._available(level):
                return level
        return None

    def _move(self, level: Level, reason: str, now: float, up: bool = False) -> Decision:
        self.level = level
        self.reason = reason
        self._congested = 0
        self._quiet_since = None
        self._stepped_up_at = now if up else None
        return Decision(level, reason)


def _believable(remb_bps: float | None) -> float | None:
    if remb_bps is None or not REMB_MIN_BPS <= remb_bps <= REMB_MAX_BPS:
        return None
    return remb_bps
