"""The initial school list as CSV: one row per classroom (or per school, classroom left empty).

Columns (header required, any order, English or Chinese names): county/县区, school/学校,
kind/类型 (showcase|receiving, 示范|接收), classroom/教室 (optional). UTF-8 (with or without
BOM) and GBK/GB18030 are read. Every bad row is reported by its line number and nothing is
imported unless every row is good; rows already in the registry are left as they are."""

from __future__ import annotations

import csv
import io
import sqlite3
from dataclasses import dataclass

from server.errors import Unprocessable

MAX_ROWS = 50_000
COLUMNS = {
    "county": "county", "县区": "county", "县": "county", "区县": "county",
    "school": "school", "学校": "school",
    "kind": "kind", "类型": "kind",
    "classroom": "classroom", "教室": "classroom",
}
REQUIRED = ("county", "school", "kind")
KIND_NAMES = {
    "showcase": "showcase", "示范": "showcase", "示范校": "showcase", "主讲": "showcase",
    "receiving": "receiving", "接收": "receiving", "接收校": "receiving", "远端": "receiving",
}
ENCODINGS = {"utf-8": "utf-8-sig", "utf8": "utf-8-sig", "gbk": "gb18030", "gb2312": "gb18030",
             "gb18030": "gb18030"}


class CsvRejected(Unprocessable):
    """The file, or some of its rows, cannot be imported; `details` lists the lines."""

    code = "bad_csv"


@dataclass(frozen=True)
class Row:
    line: int
    county: str
    school: str
    kind: str
    classroom: str


@dataclass(frozen=True)
class ImportReport:
    rows: int
    counties_created: int
    schools_created: int
    classrooms_created: int


def decode(data: bytes, encoding: str = "") -> str:
    """The text of an upload: the named encoding, else UTF-8, else GBK (GB18030)."""
    if encoding:
        codec = ENCODINGS.get(encoding.strip().lower())
        if codec is None:
            raise CsvRejected(f"unknown encoding {encoding!r}; use utf-8 or gbk")
        candidates = [codec]
    else:
        candidates = ["utf-8-sig", "gb18030"]
    for codec in candidates:
        try:
            return data.decode(codec)
        except UnicodeDecodeError as exc:
            if encoding:
                raise CsvRejected(f"the file is not {encoding} text (byte {exc.start}); "
                                  "send it as UTF-8 or GBK") from exc
    raise CsvRejected("the file is neither UTF-8 nor GBK text")


def parse(text: str) -> list[Row]:
    """Every row, checked; raises CsvRejected naming each bad line."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise CsvRejected("the file is empty; the first line must name the columns "
                          "county,school,kind,classroom") from None
    except csv.Error as exc:
        raise CsvRejected(f"line 1: {exc}") from exc
    names = [COLUMNS.get(h.strip().lstrip("\ufeff").lower()) for h in header]
    unknown = [h for h, n in zip(header, names, strict=True) if n is None and h.strip()]
    missing = [c for c in REQUIRED if c not in names]
    if missing or unknown or len(set(n for n in names if n)) != len([n for n in names if n]):
        raise CsvRejected(
            f"line 1: the columns must be county, school, kind and optionally classroom (or "
            f"县区, 学校, 类型, 教室), each once; missing {', '.join(missing) or 'none'}, unknown "
            f"{', '.join(repr(u) for u in unknown) or 'none'}",
            details=[{"line": 1, "message": "wrong columns"}])
    rows: list[Row] = []
    errors: list[dict[str, object]] = []
    kinds: dict[tuple[str, str], tuple[str, int]] = {}
    try:
        for record in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in record):
                continue
            if len(rows) >= MAX_ROWS:
                raise CsvRejected(f"more than {MAX_ROWS} rows; split the file")
            if len(record) != len(header):
                errors.append({"line": line, "message": f"{len(record)} fields, the header has "
                               f"{len(header)}"})
                continue
            cells = {n: v.strip() for n, v in zip(names, record, strict=True) if n}
            problems = [f"{c} is empty" for c in REQUIRED if not cells.get(c)]
            problems += [f"{c} is longer than 200 characters" for c, v in cells.items()
                         if len(v) > 200]
            kind = KIND_NAMES.get(cells.get("kind", "").lower())
            if cells.get("kind") and kind is None:
                problems.append(f"kind {cells['kind']!r} is not showcase or receiving")
            key = (cells.get("county", ""), cells.get("school", ""))
            if kind is not None and key in kinds and kinds[key][0] != kind:
                problems.append(f"school {key[1]!r} is {kinds[key][0]} on line "
                                f"{kinds[key][1]}")
            if problems:
                errors.append({"line": line, "message": "; ".join(problems)})
                continue
            assert kind is not None
            kinds.setdefault(key, (kind, line))
            rows.append(Row(line, key[0], key[1], kind, cells.get("classroom", "")))
    except csv.Error as exc:
        errors.append({"line": reader.line_num, "message": str(exc)})
    if errors:
        raise CsvRejected(_summary(errors), details=errors)
    if not rows:
        raise CsvRejected("the file has a header but no rows")
    return rows


def apply(conn: sqlite3.Connection, rows: list[Row]) -> ImportReport:
    """Insert what is new (inside the caller's transaction; raising rolls everything back)."""
    counties = schools = classrooms = 0
    errors: list[dict[str, object]] = []
    for row in rows:
        found = conn.execute("SELECT id FROM counties WHERE name = ?", (row.county,)).fetchone()
        if found is None:
            county_id = conn.execute("INSERT INTO counties (name) VALUES (?)",
                                     (row.county,)).lastrowid
            counties += 1
        else:
            county_id = found[0]
        found = conn.execute("SELECT id, kind FROM schools WHERE county_id = ? AND name = ?",
                             (county_id, row.school)).fetchone()
        if found is None:
            school_id = conn.execute("INSERT INTO schools (name, county_id, kind) VALUES "
                                     "(?, ?, ?)", (row.school, county_id, row.kind)).lastrowid
            schools += 1
        elif found[1] != row.kind:
            errors.append({"line": row.line, "message": f"school {row.school!r} is already "
                           f"registered as {found[1]}"})
            continue
        else:
            school_id = found[0]
        if row.classroom and conn.execute(
                "SELECT 1 FROM classrooms WHERE school_id = ? AND name = ?",
                (school_id, row.classroom)).fetchone() is None:
            conn.execute("INSERT INTO classrooms (name, school_id) VALUES (?, ?)",
                         (row.classroom, school_id))
            classrooms += 1
    if errors:
        raise CsvRejected(_summary(errors), details=errors)
    return ImportReport(len(rows), counties, schools, classrooms)


def _summary(errors: list[dict[str, object]]) -> str:
    shown = "; ".join(f"line {e['line']}: {e['message']}" for e in errors[:5])
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return f"{len(errors)} bad rows, nothing imported: {shown}{more}"
