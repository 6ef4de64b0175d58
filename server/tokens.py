"""Signed access tokens (JWT, HS256): who may publish to or watch which room, until when."""

from __future__ import annotations

import enum
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import jwt

from server.errors import Forbidden, Unauthorized

ALGORITHM = "HS256"
ISSUER = "classcast"


class Role(enum.StrEnum):
    ADMIN = "admin"
    TEACHER = "teacher"
    CLASSROOM = "classroom"
    VIEWER = "viewer"


@dataclass(frozen=True)
class Claims:
    role: Role
    room: str | None  # None: every room
    subject: str
    expires_at: int

    def may_publish(self, room: str) -> bool:
        if self.role is Role.ADMIN:
            return True
        return self.role is Role.TEACHER and self.room in (None, room)

    def may_watch(self, room: str) -> bool:
        return self.role is Role.ADMIN or self.room in (None, room)

    def require_publish(self, room: str) -> None:
        if not self.may_publish(room):
            raise Forbidden(f"a {self.role} token may not publish to room {room!r}; "
                            "ask for a teacher token for this room")

    def require_watch(self, room: str) -> None:
        if not self.may_watch(room):
            raise Forbidden(f"this {self.role} token is for another room, not {room!r}")

    def require_admin(self) -> None:
        if self.role is not Role.ADMIN:
            raise Forbidden("this needs an admin token")


CLASSROOM_PREFIX = "classroom:"


def classroom_subject(classroom: int) -> str:
    """The subject of a registered classroom device's token (attendance recognises it)."""
    return f"{CLASSROOM_PREFIX}{classroom}"


def classroom_of(subject: str) -> int | None:
    """The registry classroom id a token subject names, or None."""
    if not subject.startswith(CLASSROOM_PREFIX):
        return None
    rest = subject[len(CLASSROOM_PREFIX):]
    return int(rest) if rest.isdigit() else None


class TokenIssuer:
    def __init__(self, secret: str) -> None:
        if len(secret) < 32:
            raise ValueError("the token secret must be at least 32 characters")
        self._secret = secret

    def mint(self, role: Role, room: str | None = None, ttl_s: int = 8 * 3600,
             subject: str = "", now: float | None = None) -> str:
        issued = int(now if now is not None else time.time())
        payload: dict[str, object] = {
            "iss": ISSUER, "iat": issued, "exp": issued + ttl_s,
            "role": role.value, "sub": subject or role.value,
        }
        if room is not None:
            payload["room"] = room
        return jwt.encode(payload, self._secret, algorithm=ALGORITHM)

    def verify(self, token: str) -> Claims:
        try:
            payload = jwt.decode(token, self._secret, algorithms=[ALGORITHM], issuer=ISSUER,
                                 options={"require": ["exp", "iat", "role"]})
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("the token has expired; ask for a new one") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"the token is not valid: {exc}") from exc
        try:
            role = Role(payload["role"])
        except ValueError as exc:
            raise Unauthorized(f"the token has an unknown role {payload['role']!r}") from exc
        room = payload.get("room")
        return Claims(role=role, room=str(room) if room is not None else None,
                      subject=str(payload.get("sub", "")), expires_at=int(payload["exp"]))


def load_or_create_secret(configured: str, data_dir: Path, name: str = "secret") -> str:
    """The configured secret, or one generated once and kept in the data dir (mode 0600)."""
    if configured:
        return configured
    path = data_dir / name
    if path.exists():
        return path.read_text(encoding="ascii").strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(secret, encoding="ascii")
    tmp.chmod(0o600)
    tmp.replace(path)
    return secret


def parse_ttl(text: str) -> int:
    """'90s', '15m', '8h', '30d' or plain seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip().lower()
    try:
        if text and text[-1] in units:
            value = int(text[:-1]) * units[text[-1]]
        else:
            value = int(text)
    except ValueError as exc:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 15m, 8h, 30d)") from exc
    if value <= 0:
        raise ValueError("a token lifetime must be positive")
    return value
