"""The alerts operations get with the `observability` profile (deploy/prometheus/alerts.yml):
valid for Prometheus, each one tested with `promtool test rules` (tests/alerts/rules_test.yml),
naming only metrics the services export, and loaded where compose mounts them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import agent_desk.queue  # noqa: F401 - registers the queue's gauges
import customer_profile.bootstrap  # noqa: F401 - registers the profile metrics (all its modules)
import hilo.channel
import hilo.offers.book  # noqa: F401 - registers the offers' catalogue gauge
import journey_analytics.app  # noqa: F401 - registers the journey measures

ROOT = Path(__file__).resolve().parents[1]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "tests" / "alerts" / "rules_test.yml"
EXPORTER_METRICS = {"kafka_consumergroup_lag"}
"""Metrics the Kafka exporter serves, not a Hilo service."""


FETCHED = Path.home() / ".cache" / "hilo" / "bin" / "promtool"
"""Where `make alerts-prepare` puts promtool, unpacked from Debian's `prometheus` package."""


@pytest.fixture(scope="module")
def promtool() -> str:
    """Prometheus's own checker: PROMTOOL_PATH, else on the PATH, else `make alerts-prepare`'s."""
    found = os.environ.get("PROMTOOL_PATH") or shutil.which("promtool")
    if found is None and FETCHED.is_file():
        found = str(FETCHED)
    if found is None or not Path(found).is_file():
        pytest.fail("promtool is missing: run 'make alerts-prepare' (or set PROMTOOL_PATH)")
    return found


def run(*command: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, check=False, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(ALERTS.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def test_prometheus_takes_the_configuration_and_its_alerts(promtool: str) -> None:
    checked = run(promtool, "check", "config", "deploy/prometheus/prometheus.yml")

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked.stdout


def test_each_alert_fires_where_it_should_and_stays_quiet_where_it_should_not(
    promtool: str,
) -> None:
    tested = run(promtool, "test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)

    assert tested.returncode == 0, tested.stdout + tested.stderr
    fired = set(re.findall(r"alertname: (\w+)\n\s+exp_alerts:\n\s+- exp_labels", _tested()))
    assert fired == {rule["alert"] for rule in rules()}, "every alert has a test where it fires"


def _tested() -> str:
    return RULE_TESTS.read_text()


def test_the_alerts_name_only_metrics_the_services_export() -> None:
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
    exported = {
        metric.name + suffix
        for metric in REGISTRY.collect()
        for suffix in suffixes.get(metric.type, [""])
    }
    for rule in rules():
        unquoted = re.sub(r'"[^"]*"', "", rule["expr"])  # label values are no metrics
        for metric in re.findall(r"\b((?:hilo|kafka)_[a-z_]+)\b", unquoted):
            assert metric in exported | EXPORTER_METRICS, f"{rule['alert']}: {metric}"


def test_compose_mounts_the_alerts_where_the_configuration_reads_them() -> None:
    configuration = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = compose["services"]["prometheus"]["volumes"]

    assert configuration["rule_files"] == ["alerts.yml"]
    assert "./deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in mounts
    assert "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts


def test_a_service_every_instance_of_which_is_gone_pages() -> None:
    """Each job Prometheus scrapes has its `absent` clause: a service whose containers are all
    down leaves service discovery, and its own alerts go silent with its metrics."""
    configuration = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"] for job in configuration["scrape_configs"]} - {"kafka"}
    [missing] = [rule for rule in rules() if rule["alert"] == "HiloServiceMissing"]

    watched = re.findall(r'absent\(up\{job="([\w-]+)"\} == 1\), "job", "([\w-]+)"', missing["expr"])
    assert all(job == label for job, label in watched)
    assert {job for job, _ in watched} == jobs
    assert missing["labels"]["severity"] == "page"
