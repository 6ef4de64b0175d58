"""ClassCast catalog index benchmark: build, size and query latency of `catalog.index.CatalogIndex`.

Run by hand (not a test; no network, no S3; ~5 minutes at 100 000 lessons, `--lessons 10000`
~25 s):

    .venv/bin/python benchmarks/catalog.py [--lessons 100000] [--queries 300] [--json out.json]

It generates synthetic recorded lessons of one city's schools (乐山市: 12 counties, ~200 schools,
subjects 语文 数学 英语 科学 道德与法治 音乐 美术 体育, grades 1-9, Chinese titles and descriptions
with some English), builds the index on a real SQLite file in a temporary directory with
`CatalogIndex.replace_all` (what `classcast catalog reindex` does), and reports:

- build time and lessons/s; `upsert_many` of 1 000 changed lessons into the full index; a
  second `replace_all` over the full index (a reindex); the database size on disk (main file
  and WAL) and how much of it is in the OS page cache;
- p50 / p95 / p99 latency of each kind of call, made one at a time through the async API as
  the server makes them (`await index.search(Query.from_params(...))`, `await index.get(id)`),
  each timed with `time.perf_counter` around the await (the thread hop included, the
  `Query.from_params` parsing not):
  (a) search: text + two filters + facets; Chinese 2-character terms, longer phrases and
      English prefixes, with subject+grade, school+status or county+from/to;
  (b) detail: `get(id)`;
  (c) browse: no text, newest first, two filters + facets;
  (d) broad: one common term (数学, 小学, …), no filters, facets
  (facets as `catalog.index` counts them: each one without its own filter);
- the baseline: the first `--baseline` calls of each search kind answered by plain SQL
  statements on one connection (page of rows, count, one GROUP BY per facet; how
  `catalog.index` searched before its column snapshot, and what the tests hold it to), with
  the ratio to ClassCast over the same calls;
- what a write costs: one `upsert` into the full index (which loads the new column snapshot)
  and the snapshot load alone.

The queries' filter values are taken from a lesson that matches the text (4 in 5 queries) or
from any lesson (1 in 5, often no hits), so most searches find something, as users' do.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Python puts this script's directory first on sys.path, where this file would shadow the
# project's `catalog` package: put the repository root in front (see benchmarks/__init__.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import json
import math
import os
import platform
import random
import re
import shutil
import sqlite3
import statistics
import subprocess
import tempfile
import time
import unicodedata
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psutil

from catalog.columns import Snapshot
from catalog.index import CatalogIndex, Query
from catalog.models import Lesson
from tests.test_catalog_columns import reference

TARGETS_MS = {"search": 20.0, "detail": 5.0}  # p95, from the issue
CST = 8 * 3600  # lessons are taught in China Standard Time
TZ = ZoneInfo("Asia/Shanghai")  # the server's default `catalog.timezone`: from/to are its days

# --- the city ---------------------------------------------------------------------------------
CITY = "乐山市"
# county → the prefix its schools are named with, and some of its towns
COUNTIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "市中区": ("乐山市", ("苏稽", "水口", "牟子", "九峰", "棉竹", "通江")),
    "沙湾区": ("沙湾区", ("嘉农", "太平", "福禄", "牛石", "踏水")),
    "五通桥区": ("五通桥区", ("牛华", "竹根", "金山", "西坝", "杨柳")),
    "金口河区": ("金口河区", ("永和", "和平", "吉星")),
    "峨眉山市": ("峨眉山市", ("绥山", "高桥", "罗目", "符溪", "双福", "桂花桥")),
    "犍为县": ("犍为县", ("玉津", "孝姑", "清溪", "罗城", "石溪", "龙孔")),
    "井研县": ("井研县", ("研城", "马踏", "竹园", "研经", "周坡")),
    "夹江县": ("夹江县", ("漹城", "黄土", "甘江", "界牌", "木城")),
    "沐川县": ("沐川县", ("沐溪", "永福", "大楠", "舟坝", "黄丹")),
    "峨边彝族自治县": ("峨边彝族自治县", ("沙坪", "大堡", "毛坪", "新林")),
    "马边彝族自治县": ("马边彝族自治县", ("民建", "荣丁", "劳动", "下溪")),
    "高新区": ("乐山高新区", ("安谷", "车子", "临江")),
}
NUMERALS = "一二三四五六七八九十"
SURNAMES = ("王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗梁宋郑谢韩唐冯于董萧程曹袁邓许傅沈曾彭吕苏卢"
            "蒋蔡贾丁魏薛叶阎余潘杜戴夏钟汪田任姜范方石姚谭廖邹熊金陆郝孔白崔康毛邱秦江史顾侯邵孟龙"
            "万段雷钱汤尹黎易常武乔贺赖龚文")
GIVEN = ("静丽敏燕艳娟霞芳娜丹玲萍红玉兰英华慧巧美倩婷雪琳晶洁璐颖晓欣怡"
         "涛军伟强磊勇斌杰浩鹏飞宇峰波辉刚健明亮平俊凯")

SUBJECTS = ("语文", "数学", "英语", "科学", "道德与法治", "音乐", "美术", "体育")
SUBJECT_WEIGHTS = (24, 24, 14, 9, 7, 7, 7, 8)
# topics per subject: (primary 1-6, middle 7-9)
TOPICS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "语文": (
        ("古诗三首", "静夜思", "小蝌蚪找妈妈", "乌鸦喝水", "坐井观天", "草船借箭", "将相和",
         "狼牙山五壮士", "桂林山水", "观潮", "爬山虎的脚", "慈母情深", "少年闰土", "匆匆",
         "北京的春节", "落花生", "穷人", "开国大典", "日月潭", "望庐山瀑布", "纸的发明",
         "赵州桥", "圆明园的毁灭", "雪地里的小画家", "四季", "司马光", "守株待兔",
         "习作：我的心爱之物"),
        ("春", "济南的冬天", "从百草园到三味书屋", "背影", "岳阳楼记", "桃花源记", "孔乙己",
         "故乡", "醉翁亭记", "出师表", "藤野先生", "黄河颂", "紫藤萝瀑布", "愚公移山",
         "论语十二章", "邓稼先", "送东阳马生序", "整本书阅读：《西游记》")),
    "数学": (
        ("分数的意义", "分数的加减法", "分数的基本性质", "圆的面积", "圆的周长", "小数的意义",
         "小数乘法", "长方形和正方形的面积", "认识图形", "20以内的进位加法", "表内乘法",
         "100以内的加法和减法", "时、分、秒", "认识人民币", "三角形的内角和", "平行四边形的面积",
         "百分数的意义", "比例的意义", "圆柱的体积", "鸡兔同笼", "植树问题", "可能性",
         "因数与倍数", "位置与方向", "运算定律", "简易方程", "用 Scratch 画正多边形"),
        ("有理数", "一元一次方程", "二元一次方程组", "相交线与平行线", "勾股定理", "全等三角形",
         "一次函数", "二次函数", "实数", "轴对称", "相似三角形", "圆周角定理", "概率初步",
         "分式方程", "因式分解", "数据的分析", "锐角三角函数", "用 GeoGebra 探究函数图像")),
    "英语": (
        ("Hello!", "Colours", "My school", "My family 我的家庭", "Let's eat!", "At the farm",
         "Weather", "My favourite season", "What's your hobby?", "Shopping", "Animals",
         "Numbers 1-10", "Birthday party", "How do you go to school?",
         "Where is the science museum?", "Can you play the guitar?", "Phonics: a-e",
         "Story time: The lion and the mouse"),
        ("Do you have a soccer ball?", "Writing: my dream job", "The past continuous",
         "Festivals around the world", "At the restaurant", "Travel around China",
         "The present perfect", "Reading: Sichuan opera 川剧", "Healthy habits",
         "Protect the environment")),
    "科学": (
        ("水的三态", "植物的一生", "动物的生命周期", "磁铁的性质", "简单电路", "地球的运动",
         "太阳系", "岩石与土壤", "食物链与食物网", "空气的成分", "溶解", "光的传播", "热传递",
         "种子发芽实验", "天气观测", "杠杆原理", "声音的产生", "STEM 项目：自制太阳能小车"),
        ("光合作用", "凸透镜成像", "浮力", "细胞的结构", "酸和碱", "摩擦力", "电磁感应",
         "生态系统", "压强", "化学反应中的质量守恒", "探究影响蒸发快慢的因素")),
    "道德与法治": (
        ("我是小学生啦", "我们的班规我们订", "这些事我来做", "家人的爱", "我们的公共生活",
         "主动拒绝烟酒与毒品", "诚实守信", "垃圾分类我先行", "交通安全记心间",
         "法律保护我们健康成长", "网络新世界"),
        ("宪法是根本法", "网络生活新空间", "珍爱生命", "友谊的天空", "走近老师",
         "建设美好祖国", "认识民法典", "做守法的公民", "中国人 中国梦")),
    "音乐": (
        ("歌曲《茉莉花》", "歌曲《小星星》", "歌曲《彩色的梦》", "欣赏《二泉映月》", "认识五线谱",
         "节奏练习", "竖笛入门", "合唱《让我们荡起双桨》", "打击乐器", "歌曲《歌唱祖国》"),
        ("民族乐器", "欣赏《拉德茨基进行曲》", "川剧音乐", "《康定情歌》", "音乐剧《猫》选段",
         "Beatbox 与人声打击乐")),
    "美术": (
        ("色彩的冷暖", "线条的魅力", "剪纸", "水墨画入门", "我的自画像", "泥塑小动物",
         "设计书签", "对称的美", "手工折纸", "乐山大佛写生"),
        ("中国传统纹样", "静物素描", "版画", "漫画", "海报设计", "峨眉山风景写生")),
    "体育": (
        ("跳绳", "立定跳远", "50米快速跑", "篮球运球", "足球脚内侧传球", "广播体操", "前滚翻",
         "接力跑", "韵律操", "障碍跑"),
        ("排球垫球", "武术基本功", "跳山羊", "乒乓球", "体能训练", "篮球三步上篮", "800米耐久跑")),
}
METHODS = ("情境导入", "小组合作", "动手操作", "探究实验", "游戏活动", "问题链", "分层练习",
           "多媒体演示", "角色扮演", "项目式学习")
AIMS = ("理解{t}的基本内容", "掌握本课的重点和难点", "培养学生的合作意识和表达能力",
        "提高学生的观察能力和思维能力", "激发学生学习{s}的兴趣", "学会用所学知识解决生活中的问题",
        "体会{t}中蕴含的道理", "养成良好的学习习惯")
OCCASIONS = ("市级公开课", "县级示范课", "校级教研课", "送教下乡", "名师工作室展示课",
             "新教师汇报课", "同课异构", "“三个课堂”专递课堂")
ENGLISH_NOTES = ("Keywords: {k}.", "Bilingual lesson, English keywords: {k}.",
                 "Lesson plan and slides (PPT) attached; keywords: {k}.")
ENGLISH_KEYWORDS = {"语文": "poem, reading, writing", "数学": "fractions, area, equation",
                    "英语": "vocabulary, dialogue, phonics", "科学": "experiment, STEM, nature",
                    "道德与法治": "rules, law, citizenship", "音乐": "song, rhythm, choir",
                    "美术": "painting, colour, design", "体育": "sports, fitness, teamwork"}
STATUSES = (("complete", 92), ("interrupted", 4), ("stopped", 3), ("missing", 1))
FIRST_DAY = datetime(2024, 9, 2, tzinfo=UTC)
DAYS = 820  # to the end of November 2026

# --- queries ----------------------------------------------------------------------------------
ZH2 = ("分数", "乐山", "古诗", "面积", "方程", "函数", "光合", "跳绳", "剪纸", "峨眉", "犍为",
       "电路", "合作", "春节", "节奏", "诗歌", "实验", "沙湾", "法律", "水墨")
PHRASES = ("分数的意义", "圆的面积", "古诗三首", "光合作用", "垃圾分类", "立定跳远", "一元一次方程",
           "凸透镜成像", "小组合作", "乐山大佛", "犍为县实验", "桃花源记", "三角形的内角和",
           "我的家庭 family")
ENGLISH = ("uni", "fam", "sch", "col", "stem", "scr", "frac", "read", "wea", "ani", "poem",
           "festiv", "ppt")
BROAD = ("数学", "小学", "语文", "学生")
COMBOS = ("subject+grade", "school+status", "county+from/to")


@dataclass
class City:
    schools: list[tuple[str, str, str]]  # name, county, code
    weights: list[float]
    teachers: dict[tuple[str, str], list[str]]  # (school, subject) → names


def make_city(rng: random.Random) -> City:
    schools: list[tuple[str, str, str]] = []
    for c, (county, (prefix, towns)) in enumerate(COUNTIES.items()):
        big = county in ("市中区", "高新区", "峨眉山市", "犍为县", "夹江县")
        names = [f"{prefix}第{NUMERALS[i]}小学" for i in range(6 if big else 3)]
        names += [f"{prefix}第{NUMERALS[i]}中学" for i in range(4 if big else 2)]
        names += [f"{prefix}实验小学", f"{prefix}实验中学"]
        names += [f"{town}镇中心小学" for town in towns]
        names += [f"{town}镇初级中学" for town in towns[:3]]
        if county == "市中区":
            names += ["乐山外国语学校", "乐山师范学院附属小学", "乐山市特殊教育学校"]
        schools += [(name, county, f"c{c:02d}s{i:02d}") for i, name in enumerate(names)]
    # a few showcase schools record far more than a village school (Zipf-like)
    order = list(range(len(schools)))
    rng.shuffle(order)
    weights = [0.0] * len(schools)
    for rank, i in enumerate(order):
        weights[i] = 1.0 / (rank + 8)
    teachers: dict[tuple[str, str], list[str]] = {}
    for name, _, _ in schools:
        for subject in SUBJECTS:
            count = 3 if subject in ("语文", "数学") else 2 if subject == "英语" else 1
            teachers[(name, subject)] = [
                rng.choice(SURNAMES) + "".join(rng.choices(GIVEN, k=rng.choice((1, 2))))
                for _ in range(count)]
    return City(schools, weights, teachers)


def grade_name(grade: int) -> str:
    return f"{NUMERALS[grade - 1]}年级" if grade <= 6 else f"{('初一', '初二', '初三')[grade - 7]}"


def make_lessons(count: int, seed: int) -> list[Lesson]:
    rng = random.Random(seed)
    city = make_city(rng)
    statuses = [s for s, _ in STATUSES]
    status_weights = [w for _, w in STATUSES]
    lessons: list[Lesson] = []
    for _ in range(count):
        school, county, code = rng.choices(city.schools, city.weights)[0]
        middle = "中学" in school or (school.endswith("学校") and rng.random() < 0.4)
        grade = rng.randint(7, 9) if middle else rng.randint(1, 6)
        subject = rng.choices(SUBJECTS, SUBJECT_WEIGHTS)[0]
        teacher = rng.choice(city.teachers[(school, subject)])
        topic = rng.choice(TOPICS[subject][1 if middle else 0])
        title = topic
        shape = rng.random()
        if subject == "英语" and rng.random() < 0.6:
            title = f"Unit {rng.randint(1, 8)} {topic}"
        elif shape < 0.25:
            title = f"{topic}（第{NUMERALS[rng.randint(0, 2)]}课时）"
        elif shape < 0.40:
            title = f"{grade_name(grade)}{subject}《{topic}》"
        elif shape < 0.50:
            title = f"{rng.choice(OCCASIONS)}：{topic}"
        elif shape < 0.55:
            title = f"{topic} 复习课"
        occasion = rng.choice(OCCASIONS)
        aims = "，".join(a.format(t=topic, s=subject) for a in rng.sample(AIMS, 2))
        methods = "、".join(rng.sample(METHODS, 2))
        parts = [f"{school}{teacher}老师执教的{grade_name(grade)}{subject}{occasion}《{topic}》。",
                 f"教学目标：{aims}。",
                 f"课堂通过{methods}，引导学生主动参与、积极思考。"]
        if rng.random() < 0.3:
            parts.append(f"适合{CITY}{county}各校{subject}教研组观摩学习。")
        if rng.random() < 0.15:
            parts.append(rng.choice(ENGLISH_NOTES).format(k=ENGLISH_KEYWORDS[subject]))
        day = FIRST_DAY + timedelta(days=rng.randrange(DAYS))
        while day.weekday() >= 5:
            day -= timedelta(days=1)
        started = day.timestamp() - CST + rng.randint(8 * 3600, 17 * 3600)  # 08:00-17:00 CST
        lesson_id = (time.strftime("%Y%m%d-%H%M%S", time.gmtime(started)) + "-"
                     + rng.getrandbits(32).to_bytes(4, "big").hex())
        duration = rng.uniform(35, 45) * 60
        status = rng.choices(statuses, status_weights)[0]
        if status != "complete":
            duration *= rng.uniform(0.1, 0.9)
        lessons.append(Lesson(
            id=lesson_id, room=f"{code}-r{rng.randint(1, 3)}", school=school, county=county,
            teacher=teacher, subject=subject, grade=str(grade), title=title,
            description="".join(parts), tags=(subject, grade_name(grade), occasion),
            started_at=round(started, 3), duration_s=round(duration, 1),
            thumbnail=f"lessons/{lesson_id}/thumb.jpg", status=status,
            playlist=f"lessons/{lesson_id}/index.m3u8",
            size_bytes=int(duration * 1_500_000 / 8), segments=int(duration / 2),
            codecs={"video": "H264", "audio": "opus"}))
    return lessons


# --- which lessons a text matches (only to pick filters that find something) -----------------
def searchable(lesson: Lesson) -> str:
    return unicodedata.normalize("NFKC", " ".join(
        (lesson.title, lesson.description, " ".join(lesson.tags), lesson.subject, lesson.school,
         lesson.county, lesson.teacher, lesson.grade))).lower()


def matcher(text: str) -> Callable[[str], bool]:
    """Roughly what `match_query(text)` finds: every CJK run as a substring, words by prefix."""
    parts = re.findall(r"[\u4e00-\u9fff]+|[^\W_]+", unicodedata.normalize("NFKC", text).lower())
    cjk = [p for p in parts if re.match(r"[\u4e00-\u9fff]", p)]
    words = [re.compile(rf"(?<![^\W_]){re.escape(p)}") for p in parts if p not in cjk]
    return lambda s: all(p in s for p in cjk) and all(w.search(s) for w in words)


@dataclass
class Call:
    kind: str
    label: str  # what varies within the kind (text kind × filter combo, or the term)
    params: dict[str, str] = field(default_factory=dict)
    lesson_id: str = ""


def day(ts: float) -> str:
    return datetime.fromtimestamp(ts + CST, UTC).strftime("%Y-%m-%d")


def filters(combo: str, lesson: Lesson, rng: random.Random) -> dict[str, str]:
    if combo == "subject+grade":
        return {"subject": lesson.subject, "grade": lesson.grade}
    if combo == "school+status":
        return {"school": lesson.school, "status": lesson.status}
    span = rng.choice((7, 30, 90, 180))
    start = lesson.started_at - rng.uniform(0, span) * 86400
    return {"county": lesson.county, "from": day(start), "to": day(start + span * 86400)}


def make_calls(lessons: Sequence[Lesson], per_kind: int, seed: int) -> dict[str, list[Call]]:
    rng = random.Random(seed + 1)
    hay = [searchable(x) for x in lessons]
    pools: dict[str, list[int]] = {}
    for term in (*ZH2, *PHRASES, *ENGLISH):
        match = matcher(term)
        pools[term] = [i for i, s in enumerate(hay) if match(s)]
    calls: dict[str, list[Call]] = {"search": [], "detail": [], "browse": [], "broad": []}
    text_kinds = (("zh2", ZH2), ("phrase", PHRASES), ("en", ENGLISH))
    for n in range(per_kind):
        kind_name, terms = text_kinds[n % 3]
        combo = COMBOS[(n // 3) % 3]
        term = rng.choice(terms)
        pool = pools[term]
        source = lessons[rng.choice(pool)] if pool and rng.random() < 0.8 else rng.choice(lessons)
        calls["search"].append(Call("search", f"{kind_name} + {combo}",
                                    {"q": term, **filters(combo, source, rng)}))
        calls["detail"].append(Call("detail", "get(id)", lesson_id=rng.choice(lessons).id))
        combo = COMBOS[n % 3]
        calls["browse"].append(Call("browse", combo, filters(combo, rng.choice(lessons), rng)))
        term = BROAD[n % len(BROAD)]
        calls["broad"].append(Call("broad", term, {"q": term}))
    for kind in calls.values():
        rng.shuffle(kind)
    return calls


# --- measuring --------------------------------------------------------------------------------
def pct(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


@dataclass
class Result:
    kind: str
    label: str
    ms: float
    total: int  # hits (search/browse/broad) or 1 (detail)


async def run_calls(index: CatalogIndex, calls: Sequence[Call]) -> list[Result]:
    results: list[Result] = []
    for call in calls:
        if call.kind == "detail":
            t0 = time.perf_counter()
            await index.get(call.lesson_id)
            results.append(Result(call.kind, call.label, (time.perf_counter() - t0) * 1000, 1))
            continue
        query = Query.from_params(call.params, TZ)
        t0 = time.perf_counter()
        page = await index.search(query, facets=True)
        elapsed = (time.perf_counter() - t0) * 1000
        results.append(Result(call.kind, call.label, elapsed, page.total))
    return results


def baseline(path: Path, calls: Sequence[Call]) -> list[Result]:
    """The same searches as plain SQL statements on one connection (rows, count, one GROUP BY
    per facet: how `catalog.index` searched before the column snapshot), timed per call. The
    tests hold the index's answers to exactly these statements."""
    conn = sqlite3.connect(path)
    results: list[Result] = []
    for call in calls:
        query = Query.from_params(call.params, TZ)
        t0 = time.perf_counter()
        found = reference(conn, query)
        results.append(Result(call.kind, call.label, (time.perf_counter() - t0) * 1000,
                              found["total"]))
    conn.close()
    return results


def snapshot_load_ms(path: Path, repeat: int = 5) -> float:
    """What a write costs readers: loading the column snapshot (median of `repeat`)."""
    conn = sqlite3.connect(path)
    times = []
    for _ in range(repeat):
        conn.execute("BEGIN")
        t0 = time.perf_counter()
        Snapshot.load(conn, 0)
        times.append((time.perf_counter() - t0) * 1000)
        conn.rollback()
    conn.close()
    return statistics.median(times)


def resident(path: Path) -> int | None:
    """Bytes of the database file in the OS page cache (util-linux `fincore`), if known."""
    if shutil.which("fincore") is None:
        return None
    done = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                          capture_output=True, text=True, check=False)
    return int(done.stdout.strip()) if done.returncode == 0 and done.stdout.strip() else None


def sizes(path: Path) -> dict[str, int]:
    return {suffix or "db": (Path(str(path) + suffix).stat().st_size
                             if Path(str(path) + suffix).exists() else 0)
            for suffix in ("", "-wal", "-shm")}


class Load:
    """CPU used by everything but this process while measuring (someone else's tests)."""

    def __init__(self) -> None:
        self.me = psutil.Process()

    def __enter__(self) -> Load:
        self.t0 = time.monotonic()
        self.machine0 = psutil.cpu_times()
        self.me0 = self.me.cpu_times()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.monotonic() - self.t0
        m1, me1 = psutil.cpu_times(), self.me.cpu_times()
        busy = (m1.user + m1.system + m1.nice) - (self.machine0.user + self.machine0.system
                                                  + self.machine0.nice)
        mine = (me1.user + me1.system) - (self.me0.user + self.me0.system)
        self.mine = mine / wall if wall else 0.0
        self.other = max(0.0, busy - mine) / wall if wall else 0.0


def mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


async def timed(coro: Awaitable[Any]) -> float:
    t0 = time.perf_counter()
    await coro
    return time.perf_counter() - t0


async def main(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    lessons = make_lessons(args.lessons, args.seed)
    gen_s = time.perf_counter() - t0
    calls = make_calls(lessons, args.queries, args.seed)
    print(f"generated {len(lessons):,} lessons in {gen_s:.1f} s and "
          f"{sum(len(c) for c in calls.values())} calls; "
          f"{len({x.school for x in lessons})} schools, {len({x.teacher for x in lessons})} "
          f"teachers, {len({x.county for x in lessons})} counties", flush=True)
    report: dict[str, Any] = {
        "lessons": len(lessons), "queries_per_kind": args.queries, "seed": args.seed,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "sqlite": sqlite3.sqlite_version}}
    with tempfile.TemporaryDirectory(prefix="catalog-bench-", dir=args.dir) as tmp:
        path = Path(tmp) / "catalog.sqlite3"
        index = CatalogIndex(path)
        await index.open()
        try:
            with Load() as load:
                build_s = await timed(index.replace_all(lessons))
            report["build"] = {"seconds": build_s, "lessons_per_s": len(lessons) / build_s,
                               "other_load": load.other}
            print(f"build (replace_all): {build_s:.1f} s, {len(lessons) / build_s:,.0f} "
                  f"lessons/s; other load {load.other:.2f} cores", flush=True)
            report["size_after_build"] = sizes(path)
            changed = [Lesson(**{**x.__dict__, "title": x.title + "（修订）"})
                       for x in random.Random(args.seed + 2).sample(lessons, 1000)]
            upsert_s = await timed(index.upsert_many(changed))
            report["upsert_many_1000_s"] = upsert_s
            print(f"upsert_many of 1 000 changed lessons: {upsert_s * 1000:.0f} ms", flush=True)
            if args.rebuild:
                rebuild_s = await timed(index.replace_all(lessons))
                report["rebuild_s"] = rebuild_s
                print(f"rebuild (replace_all over the full index): {rebuild_s:.1f} s", flush=True)
            report["size"] = sizes(path)
            print(f"on disk: {report['size']}", flush=True)
            # warm-up (not counted): every reader thread opens its connection, pages get cached
            warm = [c for kind in calls.values() for c in kind[:10]]
            await run_calls(index, warm)
            results: list[Result] = []
            loads: dict[str, float] = {}
            cached: dict[str, int | None] = {}
            for kind in ("search", "detail", "browse", "broad"):
                cached[kind] = resident(path)
                with Load() as load:
                    results += await run_calls(index, calls[kind])
                loads[kind] = load.other
                print(f"  {kind}: done ({load.other:.2f} cores of other load, "
                      f"{mb(cached[kind] or 0)} of the database in the page cache before)",
                      flush=True)
            report["page_cache_before"] = cached
        finally:
            await index.close()
        report["latency"] = summarize(results, loads)
        print("baseline: the same searches as plain SQL statements...", flush=True)
        compared: dict[str, Any] = {}
        for kind in ("search", "browse", "broad"):
            sample = calls[kind][:args.baseline]
            with Load() as load:
                base = baseline(path, sample)
            ours = [r for r in results if r.kind == kind][:len(sample)]
            compared[kind] = {
                "n": len(sample), "other_load": load.other,
                "classcast": {"p50": pct([r.ms for r in ours], 50),
                              "p95": pct([r.ms for r in ours], 95)},
                "baseline": {"p50": pct([r.ms for r in base], 50),
                             "p95": pct([r.ms for r in base], 95)},
                "same_totals": all(a.total == b.total for a, b in zip(ours, base, strict=True))}
        report["baseline"] = compared
        report["snapshot_load_ms"] = snapshot_load_ms(path)
        index = CatalogIndex(path)
        await index.open()
        try:
            report["upsert_one_ms"] = 1000 * await timed(index.upsert(
                Lesson(**{**lessons[0].__dict__, "title": "一节新课"})))
        finally:
            await index.close()
    return report


def summarize(results: Sequence[Result], loads: dict[str, float]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in ("search", "detail", "browse", "broad"):
        mine = [r for r in results if r.kind == kind]
        ms = [r.ms for r in mine]
        labels: dict[str, Any] = {}
        for label in sorted({r.label for r in mine}):
            sub = [r for r in mine if r.label == label]
            labels[label] = {"n": len(sub), "p50": pct([r.ms for r in sub], 50),
                             "p95": pct([r.ms for r in sub], 95),
                             "max": max(r.ms for r in sub),
                             "hits_median": statistics.median(r.total for r in sub)}
        out[kind] = {"n": len(ms), "p50": pct(ms, 50), "p95": pct(ms, 95), "p99": pct(ms, 99),
                     "max": max(ms), "mean": statistics.fmean(ms),
                     "hits_median": statistics.median(r.total for r in mine),
                     "zero_hits": sum(1 for r in mine if r.total == 0),
                     "other_load": loads[kind], "by_label": labels}
    return out


DESCRIPTIONS = {
    "search": "(a) search: text + 2 filters + facets",
    "detail": "(b) detail: get(id)",
    "browse": "(c) browse: no text, newest, 2 filters + facets",
    "broad": "(d) broad: one common term, no filters, facets",
}


def print_report(report: dict[str, Any]) -> None:
    lat = report["latency"]
    b = report["build"]
    size = report["size"]
    print()
    print(f"### {report['lessons']:,} lessons ({report['queries_per_kind']} calls per kind, "
          f"Python {report['machine']['python']}, SQLite {report['machine']['sqlite']}, "
          f"{report['machine']['cpus']} cores)")
    print()
    print(f"- build (`replace_all`, one transaction): {b['seconds']:.1f} s = "
          f"{b['lessons_per_s']:,.0f} lessons/s (other load {b['other_load']:.2f} cores)")
    print(f"- `upsert_many` of 1 000 changed lessons into the full index: "
          f"{report['upsert_many_1000_s'] * 1000:.0f} ms")
    if "rebuild_s" in report:
        print(f"- rebuild (`replace_all` over the full index, as `classcast catalog reindex`): "
              f"{report['rebuild_s']:.1f} s")
    first = report["size_after_build"]
    print(f"- on disk after the build: database {mb(first['db'])} "
          f"({first['db'] / report['lessons']:,.0f} bytes per lesson), WAL {mb(first['-wal'])}; "
          f"after the upserts{' and the rebuild' if 'rebuild_s' in report else ''}: database "
          f"{mb(size['db'])}, WAL {mb(size['-wal'])}")
    cached = [v for v in report.get("page_cache_before", {}).values() if v is not None]
    if cached:
        print(f"- database in the OS page cache when each kind started: "
              f"{mb(min(cached))} to {mb(max(cached))} of {mb(size['db'])}")
    print()
    print("| call | n | p50 ms | p95 ms | p99 ms | max ms | hits (median) | other load | target |")
    print("|---|---|---|---|---|---|---|---|---|")
    for kind, row in lat.items():
        target = TARGETS_MS["detail" if kind == "detail" else "search"]  # all others: searches
        verdict = f"{'PASS' if row['p95'] <= target else 'FAIL'} (p95 ≤ {target:g})"
        print(f"| {DESCRIPTIONS[kind]} | {row['n']} | {row['p50']:.2f} | {row['p95']:.2f} | "
              f"{row['p99']:.2f} | {row['max']:.1f} | {row['hits_median']:,.0f} | "
              f"{row['other_load']:.2f} | {verdict} |")
    print()
    print("By query shape (p50 / p95 ms, median hits):")
    print()
    print("| call | shape | n | p50 ms | p95 ms | max ms | hits (median) |")
    print("|---|---|---|---|---|---|---|")
    for kind, row in lat.items():
        if kind == "detail":
            continue
        for label, sub in row["by_label"].items():
            print(f"| {kind} | {label} | {sub['n']} | {sub['p50']:.2f} | {sub['p95']:.2f} | "
                  f"{sub['max']:.1f} | {sub['hits_median']:,.0f} |")
    print()
    print(f"Baseline: the first {report['baseline']['search']['n']} calls of each kind as plain "
          "SQL statements on one connection (no thread hop), against ClassCast on the same calls:")
    print()
    print("| call | ClassCast p50 / p95 ms | plain SQL p50 / p95 ms | ratio p50 / p95 | "
          "same totals | other load |")
    print("|---|---|---|---|---|---|")
    for kind, row in report["baseline"].items():
        ours, base = row["classcast"], row["baseline"]
        print(f"| {DESCRIPTIONS[kind]} | {ours['p50']:.2f} / {ours['p95']:.2f} | "
              f"{base['p50']:.2f} / {base['p95']:.2f} | {base['p50'] / ours['p50']:.1f}x / "
              f"{base['p95'] / ours['p95']:.1f}x | {'yes' if row['same_totals'] else 'NO'} | "
              f"{row['other_load']:.2f} |")
    print()
    print(f"What a write costs: one `upsert` into the full index {report['upsert_one_ms']:.0f} ms "
          f"(the writer loads the new column snapshot, so readers do not wait for it); the "
          f"snapshot load alone {report['snapshot_load_ms']:.0f} ms.")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--lessons", type=int, default=100_000, help="lessons to index")
    parser.add_argument("--queries", type=int, default=300,
                        help="calls of each kind (search, detail, browse, broad)")
    parser.add_argument("--baseline", type=int, default=100,
                        help="calls of each search kind also answered by plain SQL")
    parser.add_argument("--no-rebuild", dest="rebuild", action="store_false",
                        help="skip timing a second replace_all over the full index")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", type=Path, default=None, help="where the temporary DB goes")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    result = asyncio.run(main(arguments))
    print_report(result)
    if arguments.json:
        arguments.json.write_text(json.dumps(result, ensure_ascii=False, indent=2))
