"""Alerting rules, Cloud Monitoring policies and the Grafana dashboard, checked for real."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import yaml

from hotdog.monitor.profile import read_records
from tests.conftest import ROOT, SAMPLE, free_port, running_server

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
    log = PredictionLog(PredictionLogSettings(location=None), registry=metrics.registry)
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


# --------------------------------------------------------------- a real Prometheus, end to end
@contextmanager
def _prometheus(config: Path, storage: Path) -> Iterator[str]:
    port = free_port()
    server = subprocess.Popen(
        [
            shutil.which("prometheus") or "/usr/bin/prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={storage}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(lambda: httpx.get(f"{url}/-/ready", timeout=1).status_code == 200, 30)
        yield url
    finally:
        server.terminate()
        server.wait(10)


def _wait_for(check, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"not true after {timeout} s")


def _firing(prometheus: str) -> set[str]:
    alerts = httpx.get(f"{prometheus}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    return {alert["labels"]["alertname"] for alert in alerts if alert["state"] == "firing"}


def _darkened(path: Path) -> bytes:
    from PIL import Image, ImageEnhance, ImageFilter

    buffer = io.BytesIO()
    with Image.open(path) as image:
        dark = ImageEnhance.Brightness(image.convert("RGB")).enhance(0.15)
        dark.filter(ImageFilter.GaussianBlur(3)).save(buffer, "JPEG", quality=30)
    return buffer.getvalue()


@pytest.mark.slow
def test_prometheus_scrapes_the_service_and_the_drift_alert_fires(
    exported_model: Path, tmp_path: Path
):
    """The real rules, with their `for` durations cut to 0 s (promtool's tests cover `for`)."""
    rules = re.sub(r"for: \d+[smh]", "for: 0s", RULES.read_text())
    (tmp_path / "rules.yml").write_text(rules)
    env = {
        "HOTDOG_MODEL_URI": str(exported_model / "model.int8.onnx"),
        "HOTDOG_PREDICTION_LOG": str(tmp_path / "log"),
        "HOTDOG_DRIFT_WINDOW": "20",
        "HOTDOG_DRIFT_INTERVAL_SECONDS": "0.5",
    }
    photos = sorted((SAMPLE / "test").rglob("*.jpg"))
    with running_server(env) as service:
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(tmp_path / "rules.yml")],
            "scrape_configs": [
                {"job_name": "hotdog", "static_configs": [{"targets": [service[7:]]}]}
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        with _prometheus(tmp_path / "prometheus.yml", tmp_path / "tsdb") as prometheus:
            query = f"{prometheus}/api/v1/query"
            _wait_for(lambda: httpx.get(query, params={"query": "up"}).json()["data"]["result"], 30)
            for path in photos[::2]:  # both classes, like the reference's photos: no drift
                assert httpx.post(f"{service}/predict", files={"file": path.open("rb")}).is_success
            time.sleep(3)
            assert "HotdogInputDrift" not in _firing(prometheus)
            assert "HotdogNotReady" not in _firing(prometheus)
            for path in photos[:40]:  # the same kind of photos, very dark and blurred
                files = {"file": (path.name, _darkened(path), "image/jpeg")}
                assert httpx.post(f"{service}/predict", files=files).is_success
            _wait_for(lambda: "HotdogInputDrift" in _firing(prometheus), 30)
            p_value = httpx.get(query, params={"query": "hotdog_drift_p_value"}).json()
            assert float(p_value["data"]["result"][0]["value"][1]) < 0.01
            # Every expression of the dashboard is valid PromQL on the real server.
            dashboard = json.loads((MONITORING / "grafana" / "hotdog-dashboard.json").read_text())
            for panel in dashboard["panels"]:
                for target in panel["targets"]:
                    expr = target["expr"].replace("$job", "hotdog")
                    answer = httpx.get(query, params={"query": expr}).json()
                    assert answer["status"] == "success", (expr, answer)
    # The log was flushed at shutdown: every prediction is on disk.
    assert len(read_records(tmp_path / "log").records) == 60
