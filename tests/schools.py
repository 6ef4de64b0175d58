"""Test helpers for the school registry: an admin client and a small seeded registry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp.test_utils import TestClient


class Admin:
    """Calls the JSON API with an admin token; `expect` checks the status."""

    def __init__(self, client: TestClient, token: str) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"}

    async def call(self, method: str, path: str, expect: int = 200, **kwargs: Any) -> Any:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        resp = await self.client.request(method, path, headers=headers, **kwargs)
        body = await resp.json() if resp.status != 204 else None
        assert resp.status == expect, (method, path, resp.status, body)
        return body

    async def post(self, path: str, body: Any, expect: int = 201) -> Any:
        return await self.call("POST", path, expect, json=body)


@dataclass(frozen=True)
class Seeded:
    showcase_county: int
    counties: dict[str, int]
    schools: dict[str, int]
    classrooms: dict[str, int]
    teacher: int
    room: str


async def seed(admin: Admin, room: str = "maths-5a") -> Seeded:
    """One showcase school with a room; receiving classrooms A and C in 犍为县, B in 沐川县."""
    counties = {name: (await admin.post("/api/registry/counties", {"name": name}))["id"]
                for name in ("市中区", "犍为县", "沐川县")}
    schools = {}
    for name, county, kind in (("乐山市第一小学", "市中区", "showcase"),
                               ("犍为县罗城小学", "犍为县", "receiving"),
                               ("沐川县永福小学", "沐川县", "receiving")):
        schools[name] = (await admin.post("/api/registry/schools", {
            "name": name, "county": counties[county], "kind": kind}))["id"]
    classrooms = {}
    for key, name, school in (("S", "五年级一班", "乐山市第一小学"),
                              ("A", "五年级", "犍为县罗城小学"),
                              ("C", "六年级", "犍为县罗城小学"),
                              ("B", "五年级", "沐川县永福小学")):
        classrooms[key] = (await admin.post("/api/registry/classrooms", {
            "name": name, "school": schools[school]}))["id"]
    teacher = (await admin.post("/api/registry/teachers", {
        "name": "王老师", "school": schools["乐山市第一小学"], "subject": "数学"}))["id"]
    await admin.post("/api/registry/rooms", {"name": room, "classroom": classrooms["S"],
                                             "title": "五年级数学"})
    await admin.call("PUT", f"/api/registry/rooms/{room}/pairings", json={
        "classrooms": [classrooms["A"], classrooms["B"], classrooms["C"]]})
    return Seeded(counties["市中区"], counties, schools, classrooms, teacher, room)
