"""The school registry through its admin API on a real SQLite file: CRUD, pairings, the CSV
import of the school list (UTF-8 and GBK, bad rows by line, all or nothing) and device tokens."""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable

import pytest
from aiohttp.test_utils import TestClient

from server.cli import main
from server.keys import ISSUER_KEY, SETTINGS_KEY
from server.tokens import Role, classroom_of
from tests.schools import Admin, seed


@pytest.fixture
def admin(client: TestClient, token: Callable[..., str]) -> Admin:
    return Admin(client, token("admin"))


async def test_crud_and_pairings(admin: Admin, token: Callable[..., str]) -> None:
    s = await seed(admin)
    schools = (await admin.call("GET", "/api/registry/schools"))["schools"]
    assert {(x["name"], x["kind"]) for x in schools} == {
        ("乐山市第一小学", "showcase"), ("犍为县罗城小学", "receiving"),
        ("沐川县永福小学", "receiving")}
    room = await admin.call("GET", f"/api/registry/rooms/{s.room}")
    assert room == {"name": s.room, "classroom": s.classrooms["S"], "title": "五年级数学",
                    "pairings": sorted([s.classrooms["A"], s.classrooms["B"],
                                        s.classrooms["C"]])}
    renamed = await admin.call("PATCH", f"/api/registry/classrooms/{s.classrooms['C']}",
                               json={"name": "六年级二班"})
    assert renamed["name"] == "六年级二班" and renamed["school"] == s.schools["犍为县罗城小学"]
    # a school pairs all its classrooms
    room = await admin.call("PUT", f"/api/registry/rooms/{s.room}/pairings",
                            json={"schools": [s.schools["沐川县永福小学"]]})
    assert room["pairings"] == [s.classrooms["B"]]
    extra = await admin.post("/api/registry/counties", {"name": "马边县"})
    await admin.call("DELETE", f"/api/registry/counties/{extra['id']}", expect=204)
    await admin.call("GET", f"/api/registry/counties/{extra['id']}", expect=404)

    # bad input: clear 4xx JSON errors, nothing changed
    err = await admin.call("PUT", f"/api/registry/rooms/{s.room}/pairings", expect=422,
                           json={"schools": [9999]})
    assert err["error"] == "unprocessable" and "no school 9999" in err["message"]
    err = await admin.call("PUT", f"/api/registry/rooms/{s.room}/pairings", expect=422,
                           json={"classrooms": [s.classrooms["S"]]})
    assert "showcase" in err["message"]
    assert (await admin.call("GET", f"/api/registry/rooms/{s.room}"))["pairings"] == [
        s.classrooms["B"]]
    err = await admin.post("/api/registry/schools", {"name": "x", "county": 9999,
                                                     "kind": "receiving"}, expect=422)
    assert "no county 9999" in err["message"]
    err = await admin.post("/api/registry/schools", {"name": "x", "county": s.showcase_county,
                                                     "kind": "big"}, expect=422)
    assert "kind" in err["message"]
    err = await admin.post("/api/registry/counties", {"name": "犍为县"}, expect=409)
    assert err["error"] == "conflict"
    err = await admin.post("/api/registry/rooms", {"name": "r2", "classroom": s.classrooms["A"]},
                           expect=422)
    assert "receiving school" in err["message"]
    err = await admin.call("DELETE", f"/api/registry/schools/{s.schools['犍为县罗城小学']}",
                           expect=409)
    assert "still used" in err["message"]
    err = await admin.post("/api/registry/teachers", {"school": s.schools["乐山市第一小学"]},
                           expect=400)
    assert '"name"' in err["message"]
    await admin.call("GET", "/api/registry/planets", expect=404)
    resp = await admin.client.get("/api/registry/schools")
    assert resp.status == 401
    resp = await admin.client.get("/api/registry/schools", headers={
        "Authorization": f"Bearer {token('classroom', s.room)}"})
    assert resp.status == 403 and (await resp.json())["error"] == "forbidden"


SCHOOL_LIST = """county,school,kind,classroom
市中区,乐山市第一小学,showcase,五年级一班
犍为县,犍为县罗城小学,receiving,五年级
犍为县,犍为县罗城小学,receiving,六年级
沐川县,沐川县永福小学,接收,五年级
"""


async def _import(admin: Admin, data: bytes, expect: int, query: str = "",
                  content_type: str = "text/csv") -> dict[str, object]:
    result: dict[str, object] = await admin.call(
        "POST", f"/api/registry/import{query}", expect, data=data,
        headers={"Content-Type": content_type})
    return result


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gbk"])
async def test_csv_import_utf8_and_gbk(admin: Admin, encoding: str) -> None:
    report = await _import(admin, SCHOOL_LIST.encode(encoding), 201)
    assert report == {"rows": 4, "counties_created": 3, "schools_created": 3,
                      "classrooms_created": 4}
    schools = (await admin.call("GET", "/api/registry/schools"))["schools"]
    assert {(x["name"], x["kind"]) for x in schools} == {
        ("乐山市第一小学", "showcase"), ("犍为县罗城小学", "receiving"),
        ("沐川县永福小学", "receiving")}
    # importing the same list again changes nothing
    again = await _import(admin, SCHOOL_LIST.encode(encoding), 201)
    assert again == {"rows": 4, "counties_created": 0, "schools_created": 0,
                     "classrooms_created": 0}
    assert len((await admin.call("GET", "/api/registry/classrooms"))["classrooms"]) == 4


async def test_chinese_headers_and_explicit_encoding(admin: Admin) -> None:
    text = "县区,学校,类型\n峨边县,峨边县新场小学,接收校\n"
    report = await _import(admin, text.encode("gbk"), 201, "?encoding=gbk")
    assert report["schools_created"] == 1 and report["classrooms_created"] == 0


async def test_csv_bad_rows_are_reported_by_line_and_nothing_is_imported(
        admin: Admin) -> None:
    await _import(admin, "county,school,kind\n犍为县,犍为县罗城小学,receiving\n".encode(), 201)
    before = {k: (await admin.call("GET", f"/api/registry/{k}"))[k]
              for k in ("counties", "schools", "classrooms")}
    bad = ("county,school,kind,classroom\n"
           "马边县,马边县民主小学,receiving,一年级\n"  # good
           ",无县小学,receiving,一年级\n"  # line 3: county empty
           "马边县,马边县民主小学,big,二年级\n"  # line 4: unknown kind
           "马边县,马边县荣丁小学,receiving\n"  # line 5: too few fields
           "\n"
           "马边县,马边县民主小学,showcase,三年级\n")  # line 7: kind contradicts line 2
    err = await _import(admin, bad.encode(), 422)
    assert err["error"] == "bad_csv"
    lines = {d["line"]: d["message"] for d in err["details"]}  # type: ignore[attr-defined]
    assert sorted(lines) == [3, 4, 5, 7]
    assert "county is empty" in lines[3] and "'big'" in lines[4]
    assert "3 fields" in lines[5] and "line 2" in lines[7]
    assert "nothing imported" in str(err["message"])
    # a row that contradicts the registry itself (not the file) fails the whole file too
    err = await _import(admin, ("county,school,kind\n马边县,马边县民主小学,receiving\n"
                                "犍为县,犍为县罗城小学,showcase\n").encode(), 422)
    assert [d["line"] for d in err["details"]] == [3]  # type: ignore[attr-defined]
    after = {k: (await admin.call("GET", f"/api/registry/{k}"))[k]
             for k in ("counties", "schools", "classrooms")}
    assert after == before


async def test_csv_wrong_columns_and_encodings(admin: Admin) -> None:
    err = await _import(admin, b"name,town\nx,y\n", 422)
    assert err["details"] == [{"line": 1, "message": "wrong columns"}]
    assert "missing county, school, kind" in str(err["message"])
    err = await _import(admin, b"", 422)
    assert "empty" in str(err["message"])
    err = await _import(admin, b"county,school,kind\n\xff\xfe\xff\xfe\x81\n", 422)
    assert "neither UTF-8 nor GBK" in str(err["message"])
    err = await _import(admin, SCHOOL_LIST.encode("gbk"), 422, "?encoding=utf-8")
    assert "not utf-8 text" in str(err["message"])
    err = await _import(admin, SCHOOL_LIST.encode(), 422, "?encoding=latin-9")
    assert "unknown encoding" in str(err["message"])
    err = await _import(admin, SCHOOL_LIST.encode(), 415, content_type="application/json")
    assert err["error"] == "unsupported_media_type"
    assert (await admin.call("GET", "/api/registry/counties"))["counties"] == []


async def test_classroom_device_tokens(client: TestClient, admin: Admin) -> None:
    s = await seed(admin)
    body = await admin.post(f"/api/registry/classrooms/{s.classrooms['A']}/token",
                            {"ttl": "365d"})
    claims = client.app[ISSUER_KEY].verify(body["token"])
    assert claims.role is Role.CLASSROOM and claims.room is None
    assert classroom_of(claims.subject) == s.classrooms["A"]
    assert body["ttl_s"] == 365 * 86400
    await admin.post("/api/registry/classrooms/9999/token", {}, expect=404)

    # the CLI mints the same kind of token from the service's data dir
    settings = client.app[SETTINGS_KEY]
    argv = ["token", "--role", "classroom", "--classroom", str(s.classrooms["B"]),
            "--ttl", "365d", "--data-dir", settings.data_dir]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    claims = client.app[ISSUER_KEY].verify(out.getvalue().strip())
    assert classroom_of(claims.subject) == s.classrooms["B"]
    assert claims.expires_at - time.time() > 364 * 86400
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["token", "--role", "classroom", "--classroom", "9999",
                     "--data-dir", settings.data_dir]) == 2
    assert "no classroom 9999" in err.getvalue()
