"""The settings tree: precedence, errors, and the sample file that documents it."""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

import pytest

from server import settings as settings_mod
from server.errors import ConfigError

SAMPLE = Path(__file__).parent.parent / "infra" / "classcast.sample.toml"


def test_sample_file_documents_every_field_with_its_default() -> None:
    text = SAMPLE.read_text(encoding="utf-8")
    assert text == settings_mod.sample_toml(), "regenerate infra/classcast.sample.toml"
    doc = tomllib.loads(text)
    for f in settings_mod.fields():
        section = doc[f.section] if f.section else doc
        value = section[f.name]
        assert (tuple(value) if isinstance(value, list) else value) == f.default
        assert f.help and f"env {f.env}" in text


def test_precedence_defaults_file_env_flags(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('data_dir = "/from-file"\n[http]\nport = 9000\nhost = "0.0.0.0"\n'
                      '[ice]\naddresses = ["10.0.0.5"]\n')
    parser = argparse.ArgumentParser()
    settings_mod.add_arguments(parser)
    args = parser.parse_args(["--config", str(config), "--port", "9100",
                              "--ice-address", "127.0.0.1", "--ice-address", "192.0.2.7"])
    s = settings_mod.load(args, environ={"CLASSCAST_HOST": "127.0.0.2",
                                         "CLASSCAST_RELAY_RETRY_AFTER_S": "9",
                                         "CLASSCAST_S3_SECURE": "yes"})
    assert s.http.port == 9100  # flag beats file
    assert s.http.host == "127.0.0.2"  # environment beats file
    assert s.data_dir == "/from-file"
    assert s.ice.addresses == ("127.0.0.1", "192.0.2.7")
    assert s.relay.retry_after_s == 9 and s.s3.secure is True
    env = settings_mod.load(environ={"CLASSCAST_ICE_ADDRESSES": "127.0.0.1, ::1"})
    assert env.ice.addresses == ("127.0.0.1", "::1")


def test_bad_values_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"http\.port"):
        settings_mod.load(environ={"CLASSCAST_PORT": "eighty"})
    bad = tmp_path / "bad.toml"
    bad.write_text("[http]\nprot = 1\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        settings_mod.load(environ={}, config_file=str(bad))
    with pytest.raises(ConfigError, match="cannot read"):
        settings_mod.load(environ={}, config_file=str(tmp_path / "missing.toml"))
