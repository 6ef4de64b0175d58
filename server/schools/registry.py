"""The school registry: counties, schools, classrooms, teachers, rooms and pairings (which
receiving classrooms a room delivers to), in SQLite, with an in-memory `Directory` snapshot
that attendance and metrics read without touching the database."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from catalog.database import Database
from server.errors import Conflict, NotFound, Unprocessable
from server.schools.models import KINDS, Classroom, County, Place, Room, School, Teacher

logger = logging.getLogger(__name__)

Record = County | School | Classroom | Teacher | Room


@dataclass(frozen=True)
class Directory:
    """A snapshot of the registry (replaced whole after every change)."""

    places: Mapping[int, Place]  # by classroom id
    rooms: Mapping[str, Room]
    teachers: Mapping[int, Teacher]

    def county_of_room(self, room: str) -> str:
        r = self.rooms.get(room)
        place = self.places.get(r.classroom) if r is not None else None
        return place.county_name if place is not None else ""


@dataclass(frozen=True)
class _Kind:
    """How one record kind maps to its table; `refs` are fields naming another kind's id."""

    name: str
    table: str
    key: str
    fields: tuple[str, ...]
    columns: tuple[str, ...]
    refs: Mapping[str, str]
    make: Callable[[sqlite3.Connection, sqlite3.Row], Any]


def _room(conn: sqlite3.Connection, row: sqlite3.Row) -> Room:
    pairs = tuple(r[0] for r in conn.execute(
        "SELECT classroom_id FROM pairings WHERE room = ? ORDER BY classroom_id", (row["name"],)))
    return Room(row["name"], row["classroom_id"], row["title"], pairs)


KIND_SPECS: dict[str, _Kind] = {
    "counties": _Kind("county", "counties", "id", ("name",), ("name",), {},
                      lambda c, r: County(r["id"], r["name"])),
    "schools": _Kind("school", "schools", "id", ("name", "county", "kind"),
                     ("name", "county_id", "kind"), {"county": "counties"},
                     lambda c, r: School(r["id"], r["name"], r["county_id"], r["kind"])),
    "classrooms": _Kind("classroom", "classrooms", "id", ("name", "school"),
                        ("name", "school_id"), {"school": "schools"},
                        lambda c, r: Classroom(r["id"], r["name"], r["school_id"])),
    "teachers": _Kind("teacher", "teachers", "id", ("name", "school", "subject"),
                      ("name", "school_id", "subject"), {"school": "schools"},
                      lambda c, r: Teacher(r["id"], r["name"], r["school_id"], r["subject"])),
    "rooms": _Kind("room", "rooms", "name", ("name", "classroom", "title"),
                   ("name", "classroom_id", "title"), {"classroom": "classrooms"}, _room),
}


class Registry:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.directory = Directory({}, {}, {})

    async def open(self) -> None:
        self.directory = await self.db.read(_load_directory)

    async def _write(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """A change and the new directory snapshot, in one transaction."""
        def change(conn: sqlite3.Connection) -> tuple[Any, Directory]:
            return fn(conn), _load_directory(conn)

        result, self.directory = await self.db.write(change)
        return result

    # --- records ----------------------------------------------------------------------------
    async def list(self, kind: str) -> list[Any]:
        spec = KIND_SPECS[kind]

        def query(conn: sqlite3.Connection) -> list[Any]:
            rows = conn.execute(f"SELECT * FROM {spec.table} ORDER BY {spec.key}").fetchall()
            return [spec.make(conn, r) for r in rows]

        return await self.db.read(query)

    async def get(self, kind: str, key: int | str) -> Any:
        spec = KIND_SPECS[kind]
        return await self.db.read(lambda conn: _get(conn, spec, key))

    async def create(self, kind: str, values: Mapping[str, Any]) -> Any:
        spec = KIND_SPECS[kind]

        def insert(conn: sqlite3.Connection) -> Any:
            _check(conn, spec, values)
            cols = [c for f, c in zip(spec.fields, spec.columns, strict=True) if f in values]
            args = [values[f] for f in spec.fields if f in values]
            try:
                cur = conn.execute(f"INSERT INTO {spec.table} ({', '.join(cols)}) VALUES "
                                   f"({', '.join('?' * len(cols))})", args)
            except sqlite3.IntegrityError as exc:
                raise Conflict(f"this {spec.name} exists already ({_why(exc)})") from exc
            key: int | str = values["name"] if spec.key == "name" else int(cur.lastrowid or 0)
            return _get(conn, spec, key)

        return await self._write(insert)

    async def update(self, kind: str, key: int | str, values: Mapping[str, Any]) -> Any:
        spec = KIND_SPECS[kind]

        def update(conn: sqlite3.Connection) -> Any:
            _get(conn, spec, key)
            _check(conn, spec, values)
            sets = [(c, values[f]) for f, c in zip(spec.fields, spec.columns, strict=True)
                    if f in values and f != spec.key]
            if sets:
                try:
                    conn.execute(f"UPDATE {spec.table} SET {', '.join(c + ' = ?' for c, _ in sets)}"
                                 f" WHERE {spec.key} = ?", [v for _, v in sets] + [key])
                except sqlite3.IntegrityError as exc:
                    raise Conflict(f"cannot change this {spec.name}: {_why(exc)}") from exc
            return _get(conn, spec, key)

        return await self._write(update)

    async def delete(self, kind: str, key: int | str) -> None:
        spec = KIND_SPECS[kind]

        def delete(conn: sqlite3.Connection) -> None:
            _get(conn, spec, key)
            try:
                conn.execute(f"DELETE FROM {spec.table} WHERE {spec.key} = ?", (key,))
            except sqlite3.IntegrityError as exc:
                raise Conflict(f"{spec.name} {key!r} is still used (by its classrooms, rooms, "
                               "pairings or lessons); remove those first") from exc

        await self._write(delete)

    # --- pairings ---------------------------------------------------------------------------
    async def set_pairings(self, room: str, classrooms: Sequence[int],
                           schools: Sequence[int] = ()) -> Room:
        """Make `room` deliver to these receiving classrooms (and every classroom of these
        receiving schools)."""
        def pair(conn: sqlite3.Connection) -> Room:
            _get(conn, KIND_SPECS["rooms"], room)
            wanted = set(classrooms)
            for school in schools:
                row = conn.execute("SELECT kind FROM schools WHERE id = ?", (school,)).fetchone()
                if row is None:
                    raise Unprocessable(f"no school {school}; create it or import the school "
                                        "list first")
                if row["kind"] != "receiving":
                    raise Unprocessable(f"school {school} is a showcase school; rooms deliver "
                                        "to receiving schools")
                wanted.update(r[0] for r in conn.execute(
                    "SELECT id FROM classrooms WHERE school_id = ?", (school,)))
            for classroom in sorted(wanted):
                row = conn.execute(
                    "SELECT s.kind FROM classrooms c JOIN schools s ON s.id = c.school_id "
                    "WHERE c.id = ?", (classroom,)).fetchone()
                if row is None:
                    raise Unprocessable(f"no classroom {classroom}")
                if row["kind"] != "receiving":
                    raise Unprocessable(f"classroom {classroom} belongs to a showcase school; "
                                        "rooms deliver to receiving classrooms")
            conn.execute("DELETE FROM pairings WHERE room = ?", (room,))
            conn.executemany("INSERT INTO pairings (room, classroom_id) VALUES (?, ?)",
                             [(room, c) for c in sorted(wanted)])
            result: Room = _get(conn, KIND_SPECS["rooms"], room)
            return result

        result: Room = await self._write(pair)
        return result

    async def apply(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run a bulk change (e.g. a CSV import) in one transaction and refresh the snapshot."""
        return await self._write(fn)


def _get(conn: sqlite3.Connection, spec: _Kind, key: int | str) -> Any:
    row = conn.execute(f"SELECT * FROM {spec.table} WHERE {spec.key} = ?", (key,)).fetchone()
    if row is None:
        raise NotFound(f"no {spec.name} {key!r}")
    return spec.make(conn, row)


def _check(conn: sqlite3.Connection, spec: _Kind, values: Mapping[str, Any]) -> None:
    """References must exist (422 otherwise), kinds must be known, rooms are showcase ones."""
    for field, kind in spec.refs.items():
        if field in values:
            ref = KIND_SPECS[kind]
            if conn.execute(f"SELECT 1 FROM {ref.table} WHERE id = ?",
                            (values[field],)).fetchone() is None:
                raise Unprocessable(f"no {ref.name} {values[field]!r}")
    if "kind" in values and values["kind"] not in KINDS:
        raise Unprocessable(f'"kind" must be one of {", ".join(KINDS)}')
    if spec.table == "rooms" and "classroom" in values:
        row = conn.execute("SELECT s.kind FROM classrooms c JOIN schools s ON s.id = c.school_id "
                           "WHERE c.id = ?", (values["classroom"],)).fetchone()
        if row is not None and row["kind"] != "showcase":
            raise Unprocessable(f"classroom {values['classroom']} is in a receiving school; a "
                                "room is a showcase classroom's channel")


def _why(exc: sqlite3.IntegrityError) -> str:
    text = str(exc)
    if text.startswith("UNIQUE"):
        return "the name is taken: " + text.split(":", 1)[-1].strip()
    return text


def _load_directory(conn: sqlite3.Connection) -> Directory:
    places = {
        r["cid"]: Place(r["cid"], r["cname"], r["sid"], r["sname"], r["kind"], r["kid"],
                        r["kname"])
        for r in conn.execute(
            "SELECT c.id AS cid, c.name AS cname, s.id AS sid, s.name AS sname, s.kind, "
            "k.id AS kid, k.name AS kname FROM classrooms c JOIN schools s ON s.id = c.school_id "
            "JOIN counties k ON k.id = s.county_id")}
    rooms = {r["name"]: _room(conn, r) for r in conn.execute("SELECT * FROM rooms")}
    teachers = {r["id"]: Teacher(r["id"], r["name"], r["school_id"], r["subject"])
                for r in conn.execute("SELECT * FROM teachers")}
    return Directory(places, rooms, teachers)


def lookup_classroom(path: Path, classroom: int) -> Place | None:
    """For the CLI (no event loop): where a classroom is, or None; reads the file directly."""
    if not path.exists():
        return None
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return _load_directory(conn).places.get(classroom)
    except sqlite3.Error:
        return None
    finally:
        conn.close()
