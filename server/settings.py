"""The one settings tree: defaults < TOML file < CLASSCAST_* environment < command-line flags.

Every leaf field is declared once, with its default and help text; the CLI, the environment
names and `infra/classcast.sample.toml` are all derived from (and tested against) this module.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.errors import ConfigError


def _setting(default: Any, help: str, flag: str | None = None) -> Any:
    factory_default = default
    if isinstance(default, (list, tuple)):
        return field(
            default_factory=lambda: tuple(factory_default),
            metadata={"help": help, "flag": flag},
        )
    return field(default=default, metadata={"help": help, "flag": flag})


@dataclass(frozen=True)
class HttpSettings:
    host: str = _setting("127.0.0.1", "Address the HTTP service listens on.", "--host")
    port: int = _setting(8080, "TCP port of the HTTP service.", "--port")
    public_url: str = _setting(
        "", "Base URL printed in links (empty: http://HOST:PORT).", "--public-url"
    )
    max_sdp_bytes: int = _setting(
        65536, "Largest SDP offer or trickle fragment accepted, in bytes (larger: 413)."
    )


@dataclass(frozen=True)
class IceSettings:
    addresses: tuple[str, ...] = _setting(
        (),
        "Host addresses the relay gathers ICE candidates on and advertises "
        "(empty: every interface but loopback). Tests use 127.0.0.1.",
        "--ice-address",
    )
    connect_timeout_s: float = _setting(
        20.0, "A peer that has not connected this long after its offer is closed."
    )


@dataclass(frozen=True)
class AuthSettings:
    secret: str = _setting(
        "", "Token signing secret (empty: generated once into DATA_DIR/secret)."
    )
    default_ttl_s: int = _setting(8 * 3600, "Lifetime of a token minted without --ttl.")


@dataclass(frozen=True)
class RelaySettings:
    video_queue_frames: int = _setting(
        90, "Video frames queued per classroom before it drops to the next keyframe."
    )
    audio_queue_frames: int = _setting(
        50, "Audio frames queued per classroom before the oldest are dropped."
    )
    keyframe_interval_s: float = _setting(
        1.0, "Least time between two keyframe requests sent to a teacher."
    )
    join_keyframe_interval_s: float = _setting(
        0.25, "Least time between keyframe requests made only for classrooms joining (each "
        "new classroom waits for a keyframe before its first picture)."
    )
    loss_wait_s: float = _setting(
        0.5, "How long the relay waits for a lost video packet before skipping the frame."
    )
    max_subscribers: int = _setting(
        150, "Classrooms this server serves at once; more get 503 with Retry-After (measured: "
        "about 0.7 % of a core each for a 1.5 Mbps lesson)."
    )
    retry_after_s: int = _setting(
        5, "Retry-After (seconds) sent with 409 to classrooms that join before the lesson."
    )
    adapt: bool = _setting(
        True, "Move each classroom between the full stream, the low rendition and audio only "
        "by what its link reports (REMB, loss, NACKs)."
    )
    adapt_interval_s: float = _setting(
        1.0, "How often each classroom's link is read to decide its level."
    )
    adapt_up_after_s: float = _setting(
        8.0, "How long a classroom's link must stay clean before it is moved up a level (doubled, "
        "up to 64 s, each time a move up fails)."
    )
    low_height: int = _setting(
        360, "Picture height of the low rendition made for classrooms on weak links."
    )
    low_kbps: int = _setting(
        150, "Bitrate of the low rendition (kbit/s): with Opus, packet overhead and "
        "retransmissions it fits a 300 kbit/s link with 5 % loss (200 did not, measured)."
    )
    low_keyframe_s: float = _setting(
        2.0, "Keyframe interval of the low rendition (seconds): how soon a classroom moved to it "
        "gets a picture when the teacher's stream ignores keyframe requests."
    )
    low_idle_s: float = _setting(
        30.0, "Stop a room's low rendition this long after the last classroom left it."
    )


@dataclass(frozen=True)
class S3Settings:
    endpoint: str = _setting("", "S3 endpoint host:port (empty: embedded local S3 server).")
    access_key: str = _setting("classcast", "S3 access key.")
    secret_key: str = _setting("", "S3 secret key (empty: generated for the embedded server).")
    bucket: str = _setting("classcast", "Bucket that holds the lesson archive.")
    secure: bool = _setting(False, "Use HTTPS to reach the S3 endpoint.")


@dataclass(frozen=True)
class RecorderSettings:
    auto_start: bool = _setting(True, "Record every lesson from the moment its room goes live.")
    manual_rooms: tuple[str, ...] = _setting(
        (), "Rooms recorded only when their teacher starts it (the API), whatever auto_start.")
    grace_s: float = _setting(
        60.0, "How long a recording waits for a teacher who dropped out before it ends.")
    segment_s: float = _setting(2.0, "Target HLS segment length in seconds (cut at keyframes).")
    spool_budget_mb: float = _setting(
        2048.0, "Disk the local spool may use while the archive is unreachable; recordings stop "
        "(keeping what they have) when it is spent.")
    prefix: str = _setting("lessons", "Key prefix of recordings in the bucket.")


@dataclass(frozen=True)
class CatalogSettings:
    playback: str = _setting(
        "auto", "How players fetch recordings: 'presigned' (straight from the bucket with "
        "signed URLs), 'proxy' (through this server, for a bucket clients cannot reach), or "
        "'auto' (proxy for the embedded S3 server, presigned otherwise).")
    presign_ttl_s: int = _setting(6 * 3600, "Lifetime of presigned playback URLs.")
    timezone: str = _setting(
        "Asia/Shanghai", "Time zone of the schools: search dates (from/to) are its days.")


@dataclass(frozen=True)
class SchoolsSettings:
    coverage_share: float = _setting(
        0.8, "Share of a lesson's scheduled time a target classroom must watch to count as "
        "reached (coverage).")
    early_start_s: float = _setting(
        900.0, "A room that goes live up to this long before a scheduled lesson belongs to it.")
    late_after_s: float = _setting(
        300.0, "A scheduled lesson whose room is not live this long after its start counts as "
        "not started on time.")
    end_grace_s: float = _setting(
        120.0, "A lesson ends when its room has not been live for this long (a teacher back "
        "sooner continues the same lesson).")
    sample_interval_s: float = _setting(
        5.0, "How often watch time, classroom link quality (receiver reports) and the "
        "timetable's late lessons are updated.")


@dataclass(frozen=True)
class TurnSettings:
    secret: str = _setting(
        "", "coturn's static-auth-secret (use-auth-secret); empty: browsers get no TURN server.")
    urls: tuple[str, ...] = _setting(
        (), "TURN/STUN URLs handed to browsers, e.g. turn:turn.example.org:3478?transport=udp.")
    ttl_s: int = _setting(12 * 3600, "Lifetime of the TURN credentials handed out.")


@dataclass(frozen=True)
class Settings:
    data_dir: str = _setting("./data", "Directory for the secret, spool and local state.",
                             "--data-dir")
    http: HttpSettings = field(default_factory=HttpSettings)
    ice: IceSettings = field(default_factory=IceSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    relay: RelaySettings = field(default_factory=RelaySettings)
    s3: S3Settings = field(default_factory=S3Settings)
    recorder: RecorderSettings = field(default_factory=RecorderSettings)
    catalog: CatalogSettings = field(default_factory=CatalogSettings)
    schools: SchoolsSettings = field(default_factory=SchoolsSettings)
    turn: TurnSettings = field(default_factory=TurnSettings)

    @property
    def base_url(self) -> str:
        if self.http.public_url:
            return self.http.public_url.rstrip("/")
        host = "127.0.0.1" if self.http.host in ("0.0.0.0", "::", "") else self.http.host
        return f"http://{host}:{self.http.port}"


SECTIONS: dict[str, type] = {
    "http": HttpSettings,
    "ice": IceSettings,
    "auth": AuthSettings,
    "relay": RelaySettings,
    "s3": S3Settings,
    "recorder": RecorderSettings,
    "catalog": CatalogSettings,
    "schools": SchoolsSettings,
    "turn": TurnSettings,
}

# Historic, documented environment names that do not follow SECTION_FIELD.
_ENV_ALIASES = {
    ("http", "host"): "CLASSCAST_HOST",
    ("http", "port"): "CLASSCAST_PORT",
    ("auth", "secret"): "CLASSCAST_SECRET",
    ("ice", "addresses"): "CLASSCAST_ICE_ADDRESSES",
}


@dataclass(frozen=True)
class SettingField:
    """One leaf of the tree, as the loaders and the docs test see it."""

    section: str | None
    name: str
    type: Any
    default: Any
    help: str
    flag: str | None

    @property
    def env(self) -> str:
        alias = _ENV_ALIASES.get((self.section or "", self.name))
        if alias:
            return alias
        parts = [p for p in (self.section, self.name) if p]
        return "CLASSCAST_" + "_".join(parts).upper()

    @property
    def dest(self) -> str:
        return f"{self.section}__{self.name}" if self.section else self.name


def fields() -> list[SettingField]:
    out: list[SettingField] = []

    def leaves(cls: type, section: str | None) -> None:
        for f in dataclasses.fields(cls):
            if section is None and f.name in SECTIONS:
                continue
            default = (f.default_factory() if f.default_factory is not dataclasses.MISSING
                       else f.default)
            out.append(SettingField(section, f.name, type(default), default,
                                    f.metadata["help"], f.metadata.get("flag")))

    leaves(Settings, None)
    for section, cls in SECTIONS.items():
        leaves(cls, section)
    return out


def _convert(f: SettingField, raw: Any, origin: str) -> Any:
    try:
        if f.type is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if f.type is tuple:
            if isinstance(raw, str):
                return tuple(p.strip() for p in raw.split(",") if p.strip())
            return tuple(str(p) for p in raw)
        return f.type(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{origin}: {raw!r} is not a valid {f.type.__name__} "
                          f"for {f.dest.replace('__', '.')}") from exc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add `--config` and every setting that has a flag to a subcommand's parser."""
    parser.add_argument("--config", help="Optional TOML file with settings.")
    for f in fields():
        if not f.flag:
            continue
        if f.type is tuple:
            parser.add_argument(f.flag, dest=f.dest, action="append", help=f.help)
        else:
            parser.add_argument(f.flag, dest=f.dest, help=f.help)


def load(
    args: argparse.Namespace | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: str | None = None,
) -> Settings:
    """Build the frozen tree from the TOML file, the environment and parsed flags."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    path = config_file or (getattr(args, "config", None) if args is not None else None)
    if path:
        try:
            doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        known = {f.dest for f in fields()}
        for key, value in doc.items():
            if isinstance(value, dict):
                for sub, v in value.items():
                    dest = f"{key}__{sub}"
                    if dest not in known:
                        raise ConfigError(f"{path}: unknown setting [{key}] {sub}")
                    values[dest] = (v, f"{path} [{key}] {sub}")
            else:
                if key not in known:
                    raise ConfigError(f"{path}: unknown setting {key}")
                values[key] = (value, f"{path} {key}")
    for f in fields():
        if f.env in env:
            values[f.dest] = (env[f.env], f"environment {f.env}")
        if args is not None and getattr(args, f.dest, None) is not None:
            values[f.dest] = (getattr(args, f.dest), f"flag {f.flag}")
    return build(**{dest: _convert(_field(dest), raw, origin)
                    for dest, (raw, origin) in values.items()})


def _field(dest: str) -> SettingField:
    return next(f for f in fields() if f.dest == dest)


def build(**overrides: Any) -> Settings:
    """A Settings tree from `section__name=value` overrides (tests use this directly)."""
    top: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for dest, value in overrides.items():
        if "__" in dest:
            section, name = dest.split("__", 1)
            if section not in SECTIONS:
                raise ConfigError(f"unknown settings section {section}")
            sections[section][name] = value
        else:
            top[dest] = value
    try:
        return Settings(**top, **{s: SECTIONS[s](**v) for s, v in sections.items()})
    except TypeError as exc:
        raise ConfigError(str(exc)) from exc


def sample_toml(items: Sequence[SettingField] | None = None) -> str:
    """The commented sample file, generated from the declarations."""
    lines = ["# ClassCast settings. Every field is optional; shown with its default.",
             "# Precedence: defaults < this file < CLASSCAST_* environment < flags.", ""]
    current: str | None = None
    for f in items or fields():
        if f.section != current:
            current = f.section
            lines += ["", f"[{f.section}]"]
        lines.append(f"# {f.help} (env {f.env}{', flag ' + f.flag if f.flag else ''})")
        lines.append(f"{f.name} = {_toml_value(f.default)}")
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(f'"{v}"' for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
