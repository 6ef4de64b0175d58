"""A column snapshot of the lesson index, in memory, for filters, facets and ordering.

Counting facets in SQL re-runs a search's condition once per facet and walks every matching
row of the table for each; at 100 000 lessons a broad query took 300-700 ms that way. Here
each filterable column is an array of small integer codes indexed by rowid, and each sort
order an array of ranks, so a search is a few vector operations over at most one entry per
lesson: the text match comes from FTS5 as a list of rowids, everything else is done here.

A snapshot belongs to one version of the index (`meta.version`, bumped by every write): it
is loaded in the same read transaction that checked the version, so it never disagrees with
the rows read beside it. Sort orders other than `newest` are loaded the first time they are
asked for."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Ints = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]

CODED = ("subject", "grade", "school", "county", "teacher", "status", "room")
FACET_LIMIT = 50

# Every order ends with rowid, so it is total and the same on every call.
ORDERS = {
    "newest": "started_at DESC, rowid DESC",
    "longest": "duration_s DESC, started_at DESC, rowid DESC",
    "title": "title COLLATE NOCASE ASC, started_at DESC, rowid DESC",
}


def rowids(text: str | None) -> Ints:
    """Rowids from `group_concat(rowid, ' ')` (one string: far cheaper than one row each)."""
    return np.fromstring(text or "", dtype=np.int64, sep=" ")


@dataclass(frozen=True)
class Column:
    values: tuple[str, ...]
    codes: Ints  # per rowid: the index of its value in `values` (0 where there is no lesson)
    lookup: Mapping[str, int]


@dataclass(frozen=True)
class Selection:
    rowids: tuple[int, ...]  # the page, in order
    total: int
    facets: dict[str, dict[str, int]]


@dataclass(frozen=True)
class Criteria:
    """A search, as this module needs it: the text match already resolved to rowids."""

    filters: Mapping[str, str]
    text: Ints | None = None  # rowids matching the text; None: no text
    title: Ints | None = None  # rowids whose title alone matches (relevance only)
    after_rank: int | None = None  # keep newest-ranks >= this (started before `to`)
    before_rank: int | None = None  # keep newest-ranks < this (started at or after `from`)
    sort: str = "newest"
    limit: int = 20
    offset: int = 0


class Snapshot:
    def __init__(self, version: int, present: Mask, columns: dict[str, Column],
                 newest: Ints) -> None:
        self.version = version
        self.present = present
        self.count = int(np.count_nonzero(present))
        self.columns = columns
        self._orders: dict[str, Ints] = {"newest": newest}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, conn: sqlite3.Connection, version: int) -> Snapshot:
        """Read the columns (call inside the read transaction that read `version`)."""
        size = int(conn.execute("SELECT coalesce(max(rowid), 0) + 1 FROM lessons").fetchone()[0])
        present = np.zeros(size, dtype=np.bool_)
        columns: dict[str, Column] = {}
        for name in CODED:
            codes = np.zeros(size, dtype=np.int64)
            values: list[str] = []
            for value, ids in conn.execute(
                    f"SELECT {name}, group_concat(rowid, ' ') FROM lessons GROUP BY {name}"):
                codes[rowids(ids)] = len(values)
                values.append(value)
            columns[name] = Column(tuple(values), codes, {v: i for i, v in enumerate(values)})
        newest = _ranks(conn, "newest", size)
        present[newest < size] = True
        return cls(version, present, columns, newest)

    def order(self, conn: sqlite3.Connection, sort: str) -> Ints:
        """Rank of each rowid in `sort` (lower first); absent rowids rank last."""
        if sort == "oldest":
            newest = self._orders["newest"]
            return np.where(self.present, self.count - 1 - newest, len(newest))
        with self._lock:
            if sort not in self._orders:
                self._orders[sort] = _ranks(conn, sort, len(self.present))
            return self._orders[sort]

    def select(self, conn: sqlite3.Connection, criteria: Criteria,
               facets: tuple[str, ...]) -> Selection:
        base = self.present.copy()
        if criteria.text is not None:
            base[:] = False
            base[criteria.text] = True
        newest = self._orders["newest"]
        if criteria.before_rank is not None:
            base &= newest < criteria.before_rank
        if criteria.after_rank is not None:
            base &= newest >= criteria.after_rank
        masks = {name: self._equals(name, value) for name, value in criteria.filters.items()}
        hits = _all(base, masks.values())
        hit_ids = np.flatnonzero(hits)
        page = self._page(conn, hit_ids, criteria)
        counted: dict[str, dict[str, int]] = {}
        for name in facets:
            # Each facet counts with every filter but its own, so the other choices of a
            # chosen facet stay visible (and countable) on the browse page.
            scope = hits if name not in masks else _all(
                base, (m for other, m in masks.items() if other != name))
            counted[name] = self._facet(name, scope)
        return Selection(page, len(hit_ids), counted)

    def _equals(self, name: str, value: str) -> Mask:
        column = self.columns[name]
        code = column.lookup.get(value)
        if code is None:
            return np.zeros(len(self.present), dtype=np.bool_)
        return column.codes == code

    def _page(self, conn: sqlite3.Connection, hit_ids: Ints,
              criteria: Criteria) -> tuple[int, ...]:
        end = criteria.offset + criteria.limit
        if criteria.offset >= len(hit_ids):
            return ()
        if criteria.sort == "relevance":
            # Lessons whose title holds every term first, then the rest; newest first in each.
            in_title = np.zeros(len(self.present), dtype=np.bool_)
            if criteria.title is not None:
                in_title[criteria.title] = True
            keys = self._orders["newest"][hit_ids] + np.where(in_title[hit_ids], 0,
                                                              len(self.present))
        else:
            keys = self.order(conn, criteria.sort)[hit_ids]
        if end < len(keys):
            first = np.argpartition(keys, end - 1)[:end]
            chosen, keys = hit_ids[first], keys[first]
        else:
            chosen = hit_ids
        ordered = chosen[np.argsort(keys, kind="stable")]
        return tuple(int(r) for r in ordered[criteria.offset:end])

    def _facet(self, name: str, scope: Mask) -> dict[str, int]:
        column = self.columns[name]
        counts = np.bincount(column.codes[scope], minlength=len(column.values))
        found = [(int(counts[i]), column.values[i]) for i in np.flatnonzero(counts)
                 if column.values[i]]
        found.sort(key=lambda item: (-item[0], item[1]))
        return {value: count for count, value in found[:FACET_LIMIT]}


def _all(base: Mask, masks: Iterable[Mask]) -> Mask:
    result = base.copy()
    for mask in masks:
        result &= mask
    return result


def _ranks(conn: sqlite3.Connection, sort: str, size: int) -> Ints:
    # Row by row: group_concat's order is not guaranteed, this one is.
    cursor = conn.cursor()
    cursor.row_factory = None
    query = f"SELECT rowid FROM lessons ORDER BY {ORDERS[sort]}"
    ordered = np.fromiter((rowid for (rowid,) in cursor.execute(query)), dtype=np.int64)
    ranks = np.full(size, size, dtype=np.int64)
    ranks[ordered] = np.arange(len(ordered), dtype=np.int64)
    return ranks
