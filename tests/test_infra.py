"""The deployment files in infra/ work together: the compose file parses and every config it
mounts is there, Prometheus's config and alert rules pass `promtool` (with the rules' unit
tests), the dashboard and the alerts only use metrics the service exports, and the ClassCast
config in it is one the service loads."""

from __future__ import annotations

import configparser
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient

from server import settings as settings_mod
from server.keys import REGISTRY_KEY

INFRA = Path(__file__).parent.parent / "infra"
SERVICES = {"classcast", "minio", "coturn", "prometheus", "grafana"}


def _compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((INFRA / "compose.yaml").read_text(encoding="utf-8"))
    return doc


def test_compose_parses_and_every_mounted_config_is_in_infra() -> None:
    compose = _compose()
    assert set(compose["services"]) == SERVICES
    named_volumes = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source in named_volumes:
                continue
            assert source.startswith("./"), f"{name}: {volume} is neither ./… nor a volume"
            assert (INFRA / source).exists(), f"{name} mounts {source}, missing from infra/"
    build = compose["services"]["classcast"]["build"]
    assert (INFRA / build["context"] / build["dockerfile"]).is_file()
    # each service with a config of its own gets it from infra/
    mounts = {name: " ".join(s.get("volumes", [])) for name, s in compose["services"].items()}
    assert "./classcast.toml:" in mounts["classcast"]
    assert "./turnserver.conf:" in mounts["coturn"]
    assert "./prometheus.yml:" in mounts["prometheus"] and "./alerts.yml:" in mounts["prometheus"]
    assert "./grafana/provisioning:" in mounts["grafana"]


def test_compose_configures_classcast_with_real_settings() -> None:
    service = _compose()["services"]["classcast"]
    known = {f.env for f in settings_mod.fields()}
    for name in service["environment"]:
        if name.startswith("CLASSCAST_"):
            assert name in known, f"compose sets {name}, which is no ClassCast setting"
    settings = settings_mod.load(environ={}, config_file=str(INFRA / "classcast.toml"))
    assert settings.http.host == "0.0.0.0"
    # Prometheus scrapes where ClassCast listens, and ClassCast stores where MinIO listens
    prometheus = yaml.safe_load((INFRA / "prometheus.yml").read_text(encoding="utf-8"))
    targets = {job["job_name"]: job["static_configs"][0]["targets"][0]
               for job in prometheus["scrape_configs"]}
    assert targets["classcast"] == f"127.0.0.1:{settings.http.port}"
    minio = " ".join(_compose()["services"]["minio"]["command"])
    assert f"--address {settings.s3.endpoint}" in minio
    assert targets["minio"] == settings.s3.endpoint
    # coturn uses the shared-secret scheme ClassCast's TURN credentials are made for
    turn = (INFRA / "turnserver.conf").read_text(encoding="utf-8").splitlines()
    assert "use-auth-secret" in turn and "listening-port=3478" in turn
    assert "--static-auth-secret=${TURN_SECRET}" in _compose()["services"]["coturn"]["command"]
    assert "CLASSCAST_TURN_SECRET" in service["environment"]


def _promtool(*args: str) -> str:
    exe = shutil.which("promtool")
    assert exe, "promtool is installed by scripts/install-system.sh (Debian package prometheus)"
    run = subprocess.run([exe, *args], capture_output=True, text=True, cwd=INFRA, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout + run.stderr


def test_prometheus_config_and_alert_rules_pass_promtool() -> None:
    assert "SUCCESS" in _promtool("check", "config", "prometheus.yml")
    out = _promtool("check", "rules", "alerts.yml")
    assert "SUCCESS: 6 rules found" in out
    assert "SUCCESS" in _promtool("test", "rules", "alerts.test.yml")
    names = {rule["alert"] for group in yaml.safe_load(
        (INFRA / "alerts.yml").read_text(encoding="utf-8"))["groups"] for rule in group["rules"]}
    assert {"ClassCastPublisherDropped", "ClassCastCoverageBelowTarget",
            "ClassCastRecorderUploadFailing", "ClassCastS3Unreachable"} <= names


def _exported(client: TestClient) -> set[str]:
    names: set[str] = set()
    for family in client.app[REGISTRY_KEY].collect():
        names.add(family.name)
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
        names.update(family.name + s for s in suffixes.get(family.type, ()))
    return names


async def test_dashboard_and_alerts_use_only_exported_metrics(client: TestClient) -> None:
    exported = _exported(client)
    dashboard = json.loads((INFRA / "grafana/dashboards/classcast.json").read_text("utf-8"))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    rules = yaml.safe_load((INFRA / "alerts.yml").read_text(encoding="utf-8"))
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    used = {m for e in exprs for m in re.findall(r"classcast_[a-z0-9_]+", e)}
    assert used, "the dashboard queries ClassCast's metrics"
    assert used <= exported, f"not exported: {sorted(used - exported)}"
    for needed in ("classcast_schools_classrooms_connected", "classcast_schools_coverage_ratio",
                   "classcast_schools_rtt_seconds_bucket", "classcast_schools_loss_ratio_bucket"):
        assert needed in used
    uids = {p["datasource"]["uid"] for p in dashboard["panels"] if "datasource" in p}
    datasources = yaml.safe_load(
        (INFRA / "grafana/provisioning/datasources/prometheus.yml").read_text("utf-8"))
    assert uids == {d["uid"] for d in datasources["datasources"]}
    provider = yaml.safe_load(
        (INFRA / "grafana/provisioning/dashboards/classcast.yml").read_text("utf-8"))
    grafana = _compose()["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['providers'][0]['options']['path']}:ro" in grafana


@pytest.mark.parametrize("unit", ["classcast.service"])
def test_systemd_unit_runs_the_service(unit: str) -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read_string((INFRA / unit).read_text(encoding="utf-8"))
    assert parser["Service"]["ExecStart"].split()[1:] == [
        "serve", "--config", "/etc/classcast/classcast.toml"]
    assert parser["Install"]["WantedBy"] == "multi-user.target"
    assert "Restart" in parser["Service"] and parser["Service"]["User"] == "classcast"
