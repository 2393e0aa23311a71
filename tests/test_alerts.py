"""Alerting rules, Cloud Monitoring policies and the Grafana dashboard, checked for real."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

MONITORING = ROOT / "monitoring"
RULES = MONITORING / "prometheus" / "rules.yml"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def _rules() -> dict[str, tuple[str, dict]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: (group["name"], rule) for group in groups for rule in group["rules"]}


def _promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=60, cwd=RULES.parent
    )


def test_promtool_checks_and_unit_tests_the_rules():
    checked = _promtool("check", "rules", "rules.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in checked.stdout
    tested = _promtool("test", "rules", "rules_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    # Every alert has at least one unit test that expects it to fire.
    tests = (RULES.parent / "rules_test.yml").read_text()
    assert all(f"alertname: {name}" in tests for name in _rules())


def test_a_broken_rule_fails_promtool(tmp_path: Path):
    broken = RULES.read_text().replace("hotdog_drift_p_value < 0.01", "hotdog_drift_p_value <")
    (tmp_path / "rules.yml").write_text(broken)
    done = subprocess.run(
        [PROMTOOL, "check", "rules", str(tmp_path / "rules.yml")], capture_output=True, text=True
    )
    assert done.returncode != 0


def _seconds(duration: str) -> int:
    return int(duration[:-1]) * {"s": 1, "m": 60, "h": 3600}[duration[-1]]


def test_cloud_monitoring_policies_are_valid_and_match_the_rules():
    from google.cloud import monitoring_v3
    from google.protobuf import json_format

    rules = _rules()
    policies = sorted((MONITORING / "cloud-monitoring").glob("*.json"))
    assert {path.stem for path in policies} == set(rules)
    for path in policies:
        raw = json.loads(path.read_text())
        policy = json_format.ParseDict(raw, monitoring_v3.AlertPolicy.pb()())  # rejects typos
        (condition,) = policy.conditions
        group, rule = rules[path.stem]
        promql = condition.condition_prometheus_query_language
        assert promql.query == rule["expr"].strip()  # one alert, one expression, two backends
        assert promql.duration.seconds == _seconds(rule["for"])
        assert promql.rule_group == group and promql.alert_rule == path.stem
        severity = monitoring_v3.AlertPolicy.Severity
        expected = severity.CRITICAL if rule["labels"]["severity"] == "page" else severity.WARNING
        assert policy.severity == expected


def test_a_policy_with_an_unknown_field_is_rejected():
    from google.cloud import monitoring_v3
    from google.protobuf import json_format

    raw = json.loads((MONITORING / "cloud-monitoring" / "HotdogInputDrift.json").read_text())
    raw["conditions"][0]["conditionPrometheusQueryLanguage"]["durationSeconds"] = 900
    with pytest.raises(json_format.ParseError):
        json_format.ParseDict(raw, monitoring_v3.AlertPolicy.pb()())


def _service_metric_names() -> set[str]:
    """Every series name the service exports: its own metrics and the prediction log's."""
    from hotdog.monitor.prediction_log import PredictionLog, PredictionLogSettings
    from hotdog.serve.metrics import ServiceMetrics

    metrics = ServiceMetrics()
    log = PredictionLog(
        PredictionLogSettings(location=None), model_version="v", class_names=["a", "b"],
        registry=metrics.registry,
    )  # fmt: skip
    log.close()
    names = set()
    for family in metrics.registry.collect():
        for suffix in ("", "_total", "_bucket", "_count", "_sum"):
            names.add(family.name + suffix)
    return names


def _metric_names(expression: str) -> set[str]:
    return set(re.findall(r"\b(hotdog_[a-z0-9_]+)", expression))


def test_dashboard_and_rules_use_only_metrics_the_service_exports():
    dashboard = json.loads((MONITORING / "grafana" / "hotdog-dashboard.json").read_text())
    assert dashboard["uid"] and dashboard["panels"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    exported = _service_metric_names()
    used = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used |= _metric_names(target["expr"])
    for _, rule in _rules().values():
        used |= _metric_names(rule["expr"])
    assert used and used <= exported, used - exported
