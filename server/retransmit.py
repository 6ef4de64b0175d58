"""Which of a classroom's NACKs the relay answers.

aiortc resends every sequence number a NACK lists, as often as it is listed. On a lossy
300 kbit/s link the receiver NACKs a missing packet again before the first resend could have
arrived, so the repeats crowd out the live stream (DESIGN §5). And a classroom that sends a
flood of NACKs, by bug or malice, would make the relay resend without bound.

So each subscriber's sender resends a sequence number at most once per max(RTT, 100 ms), and
at most `budget_per_s` packets a second (a token bucket, so a burst after a loss spike is
still answered)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

MIN_INTERVAL_S = 0.1
BUDGET_PER_S = 200.0  # a 1.5 Mbit/s lesson sends ~150 packets/s: a whole second's worth of repair
REMEMBERED = 1024  # sequence numbers whose last resend time is kept

Outcome = Callable[[str], None]  # "sent", "duplicate", "over_budget" or "unavailable"


class RetransmitPolicy:
    """One subscriber's: `allow(seq, rtt_s, available)` says whether to resend `seq` now."""

    def __init__(self, report: Outcome | None = None, *, min_interval_s: float = MIN_INTERVAL_S,
                 budget_per_s: float = BUDGET_PER_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._report = report
        self._min_interval_s = min_interval_s
        self._budget_per_s = budget_per_s
        self._clock = clock
        self._tokens = budget_per_s
        self._refilled_at = clock()
        self._sent_at: OrderedDict[int, float] = OrderedDict()
        self.counts = {"sent": 0, "duplicate": 0, "over_budget": 0, "unavailable": 0}
        # different sequence numbers asked for: per packet sent, the link's loss as the
        # classroom sees it (a packet asked for again and again counts once)
        self.distinct = 0
        self._asked: OrderedDict[int, None] = OrderedDict()

    def allow(self, seq: int, rtt_s: float | None, available: bool = True) -> bool:
        """`available`: the packet is still in the sender's history (else nothing is sent
        and the budget is not spent: it is too old to help anyway)."""
        if seq not in self._asked:
            self.distinct += 1
            self._asked[seq] = None
            if len(self._asked) > REMEMBERED:
                self._asked.popitem(last=False)
        if not available:
            return self._decide("unavailable", False)
        now = self._clock()
        last = self._sent_at.get(seq)
        if last is not None and now - last < max(rtt_s or 0.0, self._min_interval_s):
            return self._decide("duplicate", False)
        self._tokens = min(self._budget_per_s,
                           self._tokens + (now - self._refilled_at) * self._budget_per_s)
        self._refilled_at = now
        if self._tokens < 1:
            return self._decide("over_budget", False)
        self._tokens -= 1
        self._sent_at[seq] = now
        self._sent_at.move_to_end(seq)
        if len(self._sent_at) > REMEMBERED:
            self._sent_at.popitem(last=False)
        return self._decide("sent", True)

    def _decide(self, outcome: str, allowed: bool) -> bool:
        self.counts[outcome] += 1
        if self._report is not None:
            self._report(outcome)
        return allowed
