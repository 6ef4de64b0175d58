"""Tokens and roles, and the `classcast token` command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from server.errors import Forbidden, Unauthorized
from server.tokens import Role, TokenIssuer, load_or_create_secret, parse_ttl

SECRET = "s" * 40


def test_roles_and_rooms() -> None:
    issuer = TokenIssuer(SECRET)
    teacher = issuer.verify(issuer.mint(Role.TEACHER, "maths"))
    assert teacher.may_publish("maths") and not teacher.may_publish("art")
    assert teacher.may_watch("maths") and not teacher.may_watch("art")
    classroom = issuer.verify(issuer.mint(Role.CLASSROOM, "maths"))
    assert classroom.may_watch("maths") and not classroom.may_publish("maths")
    with pytest.raises(Forbidden):
        classroom.require_publish("maths")
    anywhere = issuer.verify(issuer.mint(Role.VIEWER))
    assert anywhere.may_watch("any-room") and not anywhere.may_publish("any-room")
    admin = issuer.verify(issuer.mint(Role.ADMIN))
    assert admin.may_publish("x") and admin.may_watch("y")


def test_bad_tokens() -> None:
    issuer = TokenIssuer(SECRET)
    with pytest.raises(Unauthorized, match="expired"):
        issuer.verify(issuer.mint(Role.TEACHER, "a", ttl_s=-1))
    with pytest.raises(Unauthorized):
        issuer.verify(TokenIssuer("t" * 40).mint(Role.TEACHER, "a"))
    with pytest.raises(Unauthorized):
        issuer.verify("abc.def.ghi")
    with pytest.raises(ValueError):
        TokenIssuer("short")


def test_ttl_parsing() -> None:
    assert parse_ttl("90s") == 90 and parse_ttl("15m") == 900 and parse_ttl("8h") == 28800
    assert parse_ttl("365d") == 365 * 86400 and parse_ttl("60") == 60
    for bad in ("", "8x", "-1h", "h"):
        with pytest.raises(ValueError):
            parse_ttl(bad)


def test_secret_is_generated_once(tmp_path: Path) -> None:
    first = load_or_create_secret("", tmp_path)
    assert load_or_create_secret("", tmp_path) == first and len(first) >= 32
    assert (tmp_path / "secret").stat().st_mode & 0o777 == 0o600
    assert load_or_create_secret("configured" * 4, tmp_path) == "configured" * 4


def test_token_command_prints_only_the_token(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "server.cli", "token", "--role", "classroom", "--room", "maths",
         "--ttl", "365d", "--data-dir", str(tmp_path)], capture_output=True, text=True, check=True)
    token = run.stdout.strip()
    assert run.stdout.count("\n") == 1 and token.count(".") == 2
    claims = TokenIssuer(load_or_create_secret("", tmp_path)).verify(token)
    assert claims.role is Role.CLASSROOM and claims.room == "maths"
    bad = subprocess.run(
        [sys.executable, "-m", "server.cli", "token", "--role", "teacher", "--ttl", "soon",
         "--data-dir", str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode == 2 and "not a duration" in bad.stderr and bad.stdout == ""
