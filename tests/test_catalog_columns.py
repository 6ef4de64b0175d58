"""The catalog index's search (column snapshot + FTS5) against plain SQL on the same file.

`catalog.columns` filters, counts facets and orders pages in memory; these tests hold it to
what straightforward SQL over the same SQLite file answers, for many random queries, and
check that every kind of write (another process's too) reaches the next search."""

from __future__ import annotations

import json
import random
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from catalog.index import FACETS, CatalogIndex, Query
from catalog.models import Lesson
from catalog.text import match_query

SUBJECTS = ("语文", "数学", "英语", "科学", "音乐", "")
SCHOOLS = ("乐山市第一小学", "市中区实验小学", "沙湾区嘉农小学", "峨眉山市第二中学")
COUNTIES = ("市中区", "沙湾区", "峨眉山市", "")
TITLE_WORDS = ("分数的意义", "小数加减", "古诗两首", "Fractions", "photosynthesis", "乐山大佛",
               "合作学习", "实验")
STATUSES = ("complete", "complete", "complete", "interrupted", "stopped", "missing")
DAY = 86400.0
START = 1_788_000_000.0  # 2026-08-29


def make_lessons(count: int, seed: int) -> list[Lesson]:
    rng = random.Random(seed)
    lessons = []
    for n in range(count):
        words = rng.sample(TITLE_WORDS, rng.randint(1, 3))
        lessons.append(Lesson(
            id=f"l{n:05d}", room=f"room-{rng.randint(1, 12)}", school=rng.choice(SCHOOLS),
            county=rng.choice(COUNTIES), teacher=f"教师{rng.randint(1, 30)}",
            subject=rng.choice(SUBJECTS), grade=str(rng.randint(1, 9)),
            title=" ".join(words[:2]), description=rng.choice(TITLE_WORDS) + " 的课堂",
            tags=tuple(rng.sample(("小组合作", "公开课", "STEM"), rng.randint(0, 2))),
            # whole hours, so some lessons start at the same moment (ties in every order)
            started_at=START + rng.randint(0, 24 * 60) * 3600.0,
            duration_s=float(rng.choice((1800, 2400, 2700))), thumbnail=None,
            status=rng.choice(STATUSES), playlist=f"lessons/l{n}/index.m3u8", size_bytes=n,
            segments=1))
    return lessons


def random_params(rng: random.Random, lessons: list[Lesson]) -> dict[str, str]:
    source = rng.choice(lessons)
    params: dict[str, str] = {}
    if rng.random() < 0.6:
        params["q"] = rng.choice((*TITLE_WORDS, "分数", "课堂", "frac", "乐山", "没有的词",
                                  "实验 分数", '"; DROP'))
    for name in rng.sample(("subject", "grade", "school", "county", "teacher", "status",
                            "room"), rng.randint(0, 3)):
        unknown = "stopped" if name == "status" else "unknown"
        params[name] = getattr(source, name) if rng.random() < 0.85 else unknown
    if rng.random() < 0.3:
        first = rng.randint(0, 60)
        params["from"] = f"2026-{9 + first // 30:02d}-{1 + first % 28:02d}"
        params["to"] = f"2026-{9 + first // 30 + rng.randint(0, 1):02d}-{rng.randint(1, 28):02d}"
    params["sort"] = rng.choice(("newest", "oldest", "longest", "title", "relevance", ""))
    params["limit"] = str(rng.randint(1, 30))
    params["offset"] = str(rng.choice((0, 0, 0, 5, 17, 60, 5000)))
    return {k: v for k, v in params.items() if v}


ORDER = {
    "newest": "started_at DESC, rowid DESC",
    "oldest": "started_at ASC, rowid ASC",
    "longest": "duration_s DESC, started_at DESC, rowid DESC",
    "title": "title COLLATE NOCASE ASC, started_at DESC, rowid DESC",
}


def reference(conn: sqlite3.Connection, query: Query) -> dict[str, Any]:
    """The same search as plain SQL: WHERE, ORDER BY, LIMIT and one GROUP BY per facet."""
    conditions: list[tuple[str, str, object]] = []
    match = match_query(query.text)
    if match:
        conditions.append(("", "rowid IN (SELECT rowid FROM lessons_fts WHERE lessons_fts "
                               "MATCH ?)", match))
    conditions += [(name, f"{name} = ?", value) for name, value in query.filters.items()]
    if query.since is not None:
        conditions.append(("", "started_at >= ?", query.since))
    if query.until is not None:
        conditions.append(("", "started_at < ?", query.until))

    def where(skip: str = "") -> tuple[str, list[object]]:
        kept = [(sql, arg) for column, sql, arg in conditions if not skip or column != skip]
        return ("WHERE " + " AND ".join(sql for sql, _ in kept) if kept else "",
                [arg for _, arg in kept])

    clause, args = where()
    if query.sort == "relevance":
        order = ("(rowid IN (SELECT rowid FROM lessons_fts WHERE lessons_fts MATCH ?)) DESC, "
                 "started_at DESC, rowid DESC")
        order_args: list[object] = [match_query(query.text, title_only=True)]
    else:
        order, order_args = ORDER[query.sort], []
    ids = [r[0] for r in conn.execute(
        f"SELECT id FROM lessons {clause} ORDER BY {order} LIMIT ? OFFSET ?",
        (*args, *order_args, query.limit, query.offset))]
    total = conn.execute(f"SELECT count(*) FROM lessons {clause}", args).fetchone()[0]
    facets = {}
    for name in FACETS:
        facet_clause, facet_args = where(skip=name)
        facets[name] = [(value, count) for value, count in conn.execute(
            f"SELECT {name}, count(*) FROM lessons {facet_clause} GROUP BY {name} "
            f"ORDER BY count(*) DESC, {name} LIMIT 51", facet_args) if value][:50]
    return {"ids": ids, "total": total, "facets": facets}


async def answer(index: CatalogIndex, query: Query) -> dict[str, Any]:
    page = await index.search(query)
    return {"ids": [x.id for x in page.lessons], "total": page.total,
            "facets": {name: list(counts.items()) for name, counts in page.facets.items()}}


@pytest.fixture
async def index(tmp_path: Path) -> Any:
    index = CatalogIndex(tmp_path / "catalog.sqlite3")
    await index.open()
    yield index
    await index.close()


async def test_search_equals_plain_sql(index: CatalogIndex, tmp_path: Path) -> None:
    lessons = make_lessons(1500, seed=7)
    await index.replace_all(lessons)
    rng = random.Random(11)
    conn = sqlite3.connect(tmp_path / "catalog.sqlite3")
    non_empty = 0
    for _ in range(400):
        query = Query.from_params(random_params(rng, lessons))
        expected = reference(conn, query)
        assert await answer(index, query) == expected, query
        non_empty += bool(expected["ids"])
    assert non_empty > 200  # the queries mostly find something, so the pages are compared


async def test_every_write_reaches_the_next_search(index: CatalogIndex, tmp_path: Path) -> None:
    lessons = make_lessons(200, seed=3)
    await index.replace_all(lessons)
    conn = sqlite3.connect(tmp_path / "catalog.sqlite3")

    async def check(**params: str) -> dict[str, Any]:
        query = Query.from_params(params)
        got = await answer(index, query)
        assert got == reference(conn, query)
        return got

    # an edit: the old title's terms are gone from the (contentless) text index
    target = lessons[0]
    await index.upsert(replace(target, title="圆的面积", subject="数学", school="新学校"))
    assert target.id in (await check(q="圆的面积"))["ids"]
    got = await check(q="圆的面积", school="新学校")
    assert got["ids"] == [target.id] and got["facets"]["school"][0] == ("新学校", 1)
    for word in target.title.split():
        assert target.id not in (await check(q=word, limit="100"))["ids"]
    # a new lesson, a status change, a delete
    await index.upsert(replace(target, id="new", title="全新的一课", room="room-99"))
    assert (await check(room="room-99"))["ids"] == ["new"]
    await index.set_status("new", "missing")
    assert (await check(status="missing", room="room-99"))["total"] == 1
    await index.delete("new")
    assert (await check(q="全新"))["total"] == 0
    # another process writes to the same file: the next search sees it
    other = CatalogIndex(tmp_path / "catalog.sqlite3")
    await other.open()
    try:
        await other.upsert(replace(target, id="elsewhere", title="别处导入的课"))
    finally:
        await other.close()
    assert (await check(q="别处导入"))["ids"] == ["elsewhere"]
    assert (await check())["total"] == 201


async def test_an_index_of_the_first_schema_is_migrated(tmp_path: Path) -> None:
    """Version 1 kept every term in one set of FTS columns, with its content; opening such a
    file rebuilds the text index from the lessons table and keeps every lesson."""
    path = tmp_path / "catalog.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE lessons (
            rowid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, room TEXT NOT NULL,
            school TEXT NOT NULL, county TEXT NOT NULL, teacher TEXT NOT NULL,
            subject TEXT NOT NULL, grade TEXT NOT NULL, title TEXT NOT NULL,
            description TEXT NOT NULL, tags TEXT NOT NULL, started_at REAL NOT NULL,
            duration_s REAL NOT NULL, thumbnail TEXT, status TEXT NOT NULL,
            playlist TEXT NOT NULL, size_bytes INTEGER NOT NULL, segments INTEGER NOT NULL,
            codecs TEXT NOT NULL);
        CREATE VIRTUAL TABLE lessons_fts USING fts5(bigrams, unigrams, words);
    """)
    conn.execute("INSERT INTO lessons VALUES (1, 'old', 'r', '乐山市第一小学', '市中区', 't', "
                 "'数学', '5', '分数的意义', '', ?, ?, 600, NULL, 'complete', "
                 "'lessons/old/index.m3u8', 1, 1, '{}')", (json.dumps(["公开课"]), START))
    conn.execute("INSERT INTO lessons_fts (rowid, bigrams, unigrams, words) "
                 "VALUES (1, '分数 数的 的意 意义', '', '')")
    conn.commit()
    conn.close()
    index = CatalogIndex(path)
    await index.open()
    try:
        for text in ("分数", "公开课", "乐山"):
            page = await index.search(Query.from_params({"q": text}))
            assert [x.id for x in page.lessons] == ["old"], text
    finally:
        await index.close()
