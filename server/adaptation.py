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
    report_age_s: float | None = None  # since its latest receiver report (None: never)


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
    """Loss and NACK ratios are smoothed (EWMA, `smoothing` per sample) before they are
    compared. A rural link loses packets at random (5 % is a design case) whatever is sent, so
    the low rendition, meant for such links, is left only for much worse, and a step up
    needs a link clean enough for the level above."""

    smoothing: float = 0.5  # weight of the newest sample
    down_loss: float = 0.10  # full stream: this much loss is congestion
    down_nack: float = 0.12
    audio_loss: float = 0.20  # low rendition: this much, and only sound gets through
    audio_nack: float = 0.25
    # congestion: REMB below this share of the level's bitrate. A receiver that sees a queue
    # building once answers with 0.85x its incoming rate, which is no reason to move (a busy
    # receiver on a clean link does that: measured with 20 aiortc classrooms on loopback).
    remb_margin: float = 0.7
    remb_rising: float = 1.02  # an estimate this much above the last one is still climbing
    clean_loss: float = 0.02  # this clean counts towards a step up to the full stream
    clean_nack: float = 0.03
    low_clean_loss: float = 0.08  # this clean counts towards a step up to the low rendition
    low_clean_nack: float = 0.10
    down_after: int = 2  # congested samples in a row before stepping down
    up_after_s: float = 8.0  # first quiet period before a step up
    up_after_max_s: float = 64.0
    failed_within_s: float = 15.0  # congestion this soon after a step up: the probe failed
    remb_warmup_s: float = 5.0  # a receiver's estimate starts low and ramps: not believed yet
    settle_s: float = 2.0  # after a step down, reports still describe the level left behind
    silent_s: float = 5.0  # no receiver report this long: treated as a link that drops them
    full_remb_margin: float = 1.4  # a probe of the full stream needs an estimate this far
    # above what the low rendition sends (when there is an estimate): a receiver's estimate
    # climbs to ~1.5x its incoming rate on a link with room, and stops below on one without


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
        self._last_remb: float | None = None
        self._loss: float | None = None  # smoothed
        self._nack: float | None = None
        self._settle_until = -1.0
        self._remb_from: float | None = None  # estimates before this are not believed

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
        if sample.at < self._settle_until:
            return None
        if self._remb_from is None:
            self._remb_from = sample.at + self._t.remb_warmup_s
        if sample.at < self._remb_from:
            sample = dataclasses.replace(sample, remb_bps=None)
        remb = _believable(sample.remb_bps)
        climbing = remb is not None and self._last_remb is not None \
            and remb > self._last_remb * self._t.remb_rising
        falling = remb is not None and self._last_remb is not None and remb < self._last_remb
        if remb is not None:
            self._last_remb = remb
        self._loss = self._smooth(self._loss, sample.loss)
        self._nack = self._smooth(self._nack, sample.nack_ratio)
        why = self._congestion(remb, climbing) or self._silence(sample)
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
        if not self._clean() or falling:
            self._quiet_since = None
            return None
        if self._quiet_since is None:
            self._quiet_since = sample.at
            return None
        higher = self._next(down=False)
        if higher is None or sample.at - self._quiet_since < self._up_after_s:
            return None
        sending = self._bitrate(self.level)
        if higher == Level.FULL and remb is not None and sending \
                and remb < sending * self._t.full_remb_margin:
            return None  # a link with no room above the low rendition: no probe
        return self._move(higher, f"link quiet for {sample.at - self._quiet_since:.0f} s",
                          sample.at, up=True)

    def switched(self, now: float) -> None:
        """The last move has taken effect (the new level's first keyframe went out, or video
        stopped): judge the new level only on what comes from now on."""
        if self._stepped_up_at is None:
            self._loss = self._nack = None
            self._settle_until = now + self._t.settle_s
        else:
            # the estimate ramps up from what the old level sent: give it time
            self._remb_from = now + self._t.remb_warmup_s
            self._last_remb = None

    def _silence(self, sample: LinkSample) -> str | None:
        """A classroom that sends no receiver reports (a broken client, or a link that loses
        everything it sends) cannot be judged: it must not keep the full stream forever on a
        shared school uplink."""
        if self.level == Level.AUDIO or self._remb_from is None:
            return None
        age = sample.report_age_s
        if age is None:  # never reported: count from the first sample
            age = sample.at - (self._remb_from - self._t.remb_warmup_s)
        if age >= self._t.silent_s:
            return f"no receiver reports for {age:.0f} s"
        return None

    def _smooth(self, average: float | None, value: float | None) -> float | None:
        if value is None:
            return average
        if average is None:
            return value
        return average + self._t.smoothing * (value - average)

    def _congestion(self, remb: float | None, climbing: bool) -> str | None:
        t = self._t
        low = self.level == Level.LOW
        max_loss, max_nack = (t.audio_loss, t.audio_nack) if low else (t.down_loss, t.down_nack)
        if self.level != Level.AUDIO:
            if self._loss is not None and self._loss >= max_loss:
                return f"loss {self._loss:.0%}"
            if self._nack is not None and self._nack >= max_nack:
                return f"{self._nack:.0%} of packets asked for again"
        sending = self._bitrate(self.level)
        if remb is not None and sending and self.level != Level.AUDIO and not climbing \
                and remb < sending * t.remb_margin:
            return f"estimate {remb / 1000:.0f} kbps < {sending / 1000:.0f} kbps sent"
        return None

    def _clean(self) -> bool:
        """Clean enough for the level above this one."""
        t = self._t
        to_full = self.level == Level.LOW
        max_loss, max_nack = ((t.clean_loss, t.clean_nack) if to_full
                              else (t.low_clean_loss, t.low_clean_nack))
        return ((self._loss is None or self._loss <= max_loss)
                and (self._nack is None or self._nack <= max_nack))

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
        if up:
            self._remb_from = now + self._t.remb_warmup_s
            self._last_remb = None
        else:
            # Judge the new level on its own reports: start the averages again once the
            # reports about the old one have gone by (`switched` moves this to when the move
            # took effect). After a step up the old level's clean averages are the right
            # start: a failing probe shows at once in loss and NACKs, not yet in the estimate.
            self._loss = self._nack = None
            self._settle_until = now + self._t.settle_s
        return Decision(level, reason)


def _believable(remb_bps: float | None) -> float | None:
    if remb_bps is None or not REMB_MIN_BPS <= remb_bps <= REMB_MAX_BPS:
        return None
    return remb_bps
