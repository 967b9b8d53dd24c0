"""Checks of deploy/ (docs/OPERATIONS.md) that need no cluster and no running node, in seconds:

- every Kubernetes manifest validates against the API schemas of one Kubernetes version, strictly
  (unknown fields fail), with kubernetes-validate's bundled schemas (offline);
- the node configurations (ConfigMap, systemd examples) are JSON with only keys NodeConfiguration
  has, and the addresses in them are IPv6;
- the systemd units pass `systemd-analyze verify` (skipped where it is missing);
- the Prometheus config, rules and json_exporter config parse, the rules pass `promtool check
  rules` where promtool is installed, and every `stoq_*` metric they or the Grafana dashboard name
  is one the code exports (Sources) or one the json_exporter config makes from a /status field
  the code writes;
- the Grafana dashboard is JSON with unique panel ids, each with a query.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
SOURCES = REPO / "Sources"
# A version kubernetes-validate (pinned in scripts/bootstrap.sh) bundles schemas for.
KUBERNETES_VERSION = "1.33.0"

METRIC = re.compile(r"\bstoq_[a-z0-9_]+")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


@functools.cache
def manifests() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((f"{path.name}: {doc.get('kind')} {doc.get('metadata', {}).get('name')}", doc))
    return docs


@functools.cache
def exported_metrics() -> set[str]:
    """Metric names the Swift code registers (`label: "stoq_…"`)."""
    names = set()
    for path in SOURCES.rglob("*.swift"):
        names.update(re.findall(r'label:\s*"(stoq_[a-z0-9_]+)"', path.read_text(errors="replace")))
    return names


def json_exporter_metrics() -> dict[str, str]:
    config = yaml.safe_load((DEPLOY / "prometheus" / "stoq-json-exporter.yml").read_text())
    return {m["name"]: m["path"] for module in config["modules"].values() for m in module["metrics"]}


def known_metrics() -> set[str]:
    return exported_metrics() | set(json_exporter_metrics())


def base_name(metric: str) -> str:
    for suffix in HISTOGRAM_SUFFIXES:
        if metric.endswith(suffix) and metric[: -len(suffix)] in known_metrics():
            return metric[: -len(suffix)]
    return metric


# --------------------------------------------------------------------------- Kubernetes


def test_manifests_exist():
    kinds = {(doc["kind"], doc["metadata"]["name"]) for _, doc in manifests()}
    assert ("DaemonSet", "stoq-edge") in kinds
    for name in ("stoq-origin", "stoq-issuer", "stoq-storage"):
        assert ("StatefulSet", name) in kinds
    assert any(kind == "ConfigMap" for kind, _ in kinds)
    services = [doc for _, doc in manifests() if doc["kind"] == "Service"]
    assert services and all(p["protocol"] == "UDP" for s in services for p in s["spec"]["ports"]), "QUIC Services are UDP"


@pytest.mark.parametrize("name,doc", manifests(), ids=[n for n, _ in manifests()])
def test_manifest_validates(name, doc):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_validator_catches_a_bad_manifest():
    """The check above is not vacuous: a misspelt field and a wrong type fail."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    edge = next(doc for _, doc in manifests() if doc["kind"] == "DaemonSet")
    bad = json.loads(json.dumps(edge))
    bad["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSION, strict=True)
    bad = json.loads(json.dumps(edge))
    bad["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "4433"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSION, strict=True)


def test_pods_probe_the_admin_healthz():
    for name, doc in manifests():
        if doc["kind"] not in ("StatefulSet", "DaemonSet"):
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            for probe in ("readinessProbe", "livenessProbe"):
                assert container[probe]["httpGet"]["path"] == "/healthz", f"{name}: {probe}"
            assert any(p.get("name") == "admin" for p in container["ports"]), name


# --------------------------------------------------------------------------- node configurations


def configuration_keys() -> set[str]:
    """The keys of docs/CONFIG.md's table (Tests/Journeys/test_config.py keeps it and the code in step)."""
    text = (REPO / "docs" / "CONFIG.md").read_text()
    return set(re.findall(r"^\| `(\w+)` \|", text[text.index("## Keys"):text.index("## Flags without a key")], re.M))


def node_configurations() -> list[tuple[str, str]]:
    configs = [(p.name, p.read_text()) for p in sorted((DEPLOY / "systemd" / "examples").glob("*.json"))]
    for _, doc in manifests():
        if doc["kind"] == "ConfigMap":
            configs += [(k, v) for k, v in doc["data"].items() if k.endswith(".json")]
    return configs


@pytest.mark.parametrize("name,text", node_configurations(), ids=[n for n, _ in node_configurations()])
def test_node_configuration(name, text):
    config = json.loads(text)
    keys = configuration_keys()
    assert keys, "the configuration keys were not found in docs/CONFIG.md"
    unknown = set(config) - keys
    assert not unknown, f"{name}: keys docs/CONFIG.md does not list: {sorted(unknown)}"
    for required in ("name", "listen", "cert", "key", "ca", "store", "role"):
        assert required in config, f"{name}: {required} is required"
    for address in [config["listen"], *config.get("peers", []), *([config["issuer"]] if "issuer" in config else []),
                    *([config["admin"]] if "admin" in config else [])]:
        assert re.fullmatch(r"\[[0-9a-fA-F:]+\]:\d+", address), f"{name}: {address} is not '[IPV6]:PORT'"


# --------------------------------------------------------------------------- systemd


UNITS = sorted((DEPLOY / "systemd").glob("*.service"))


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_systemd_unit(unit, tmp_path):
    text = unit.read_text()
    for setting in ("ProtectSystem=strict", "StateDirectory=", "ExecReload=/bin/kill -HUP $MAINPID", "Restart=on-failure",
                    "NoNewPrivileges=yes"):
        assert setting in text, f"{unit.name}: {setting}"
    assert "/usr/local/bin/stoq " in text
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # Verify against a stand-in binary: the units name /usr/local/bin/stoq, not installed here.
    fake = tmp_path / "stoq"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    name = unit.name.replace("@.service", "@origin.service")
    (tmp_path / name).write_text(text.replace("/usr/local/bin/stoq", str(fake)))
    result = subprocess.run([analyze, "verify", "--man=no", str(tmp_path / name)], capture_output=True, text=True, timeout=60)
    # verify exits 0 on settings it ignores (a misspelt key, a bad value): any line it prints
    # about the unit is a failure.
    problems = [line for line in (result.stdout + result.stderr).splitlines() if name in line or "Unknown" in line]
    assert result.returncode == 0 and not problems, f"{unit.name}:\n{result.stdout}{result.stderr}"


# --------------------------------------------------------------------------- Prometheus and Grafana


def test_prometheus_config_parses():
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert {"stoq", "stoq-kubernetes", "stoq-certificates"} <= jobs
    assert config["rule_files"] == ["stoq-alerts.yml"]


def alert_rules() -> list[dict]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "stoq-alerts.yml").read_text())
    return [rule for group in rules["groups"] for rule in group["rules"]]


def test_alert_rules_cover_the_operators_questions():
    names = {rule["alert"] for rule in alert_rules()}
    assert {"StoqNodeDown", "StoqCertificateRenewalFailing", "StoqCertificateExpiringSoon", "StoqCacheHitRatioLow",
            "StoqReceivedFaults"} <= names
    for rule in alert_rules():
        assert rule["expr"] and rule["annotations"]["summary"], rule["alert"]


def test_promtool_accepts_the_rules():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed")
    result = subprocess.run([promtool, "check", "rules", str(DEPLOY / "prometheus" / "stoq-alerts.yml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_json_exporter_reads_status_fields_the_node_writes():
    sources = "\n".join(p.read_text(errors="replace") for p in (SOURCES / "STOQNode").glob("*.swift"))
    for name, path in json_exporter_metrics().items():
        field = re.fullmatch(r"\{\.(?:certificate\.)?(\w+)\}", path.replace(" ", ""))
        assert field, f"{name}: unexpected path {path}"
        assert f'"{field.group(1)}"' in sources, f"{name}: /status has no field {field.group(1)}"


def dashboard() -> dict:
    return json.loads((DEPLOY / "grafana" / "stoq-dashboard.json").read_text())


def test_dashboard_parses():
    board = dashboard()
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)) and ids
    for panel in board["panels"]:
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]


def test_only_metrics_that_exist():
    known = known_metrics()
    assert "stoq_served_bytes_total" in known and "stoq_cache_hits_total" in known, "metric scan found nothing"
    used: dict[str, set[str]] = {}
    for rule in alert_rules():
        for metric in METRIC.findall(rule["expr"]):
            used.setdefault(base_name(metric), set()).add(f"alert {rule['alert']}")
    for panel in dashboard()["panels"]:
        for target in panel["targets"]:
            for metric in METRIC.findall(target["expr"]):
                used.setdefault(base_name(metric), set()).add(f"panel {panel['title']}")
    for variable in dashboard()["templating"]["list"]:
        for metric in METRIC.findall(json.dumps(variable.get("query", ""))):
            used.setdefault(base_name(metric), set()).add(f"variable {variable['name']}")
    missing = {m: sorted(where) for m, where in used.items() if m not in known}
    assert not missing, f"metrics no code exports: {missing}"
    assert len(used) >= 10
