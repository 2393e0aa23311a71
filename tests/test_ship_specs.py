"""The shipping files, checked offline by the strongest means there is here: Google's own API
types (Cloud Build, Vertex AI), Cloud Build's JSON schema, hadolint, actionlint and zizmor.

Cloud Run's Knative YAML has no offline schema and gcloud cannot be installed here: it is parsed
and its fields are checked one by one against what the service and Cloud Run's docs need.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from google.cloud import aiplatform_v1
from google.cloud.devtools import cloudbuild_v1
from google.protobuf import json_format
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from hotdog.serve.settings import Settings
from tests.conftest import ROOT

BIN = Path(sys.executable).parent
CLOUDBUILD = sorted((ROOT / "cloudbuild").glob("*.yaml"))
PLACEHOLDERS = {
    "${API_IMAGE}": "europe-west4-docker.pkg.dev/p/hotdog/api:abc1234",
    "${MODEL_URI}": "gs://p-hotdog/models/v1/model.int8.onnx",
    "${MODEL_DIR}": "gs://p-hotdog/models/v1",
    "${API_SERVICE_ACCOUNT}": "hotdog-api@p.iam.gserviceaccount.com",
    "${PREDICTION_LOG_URI}": "gs://p-hotdog/predictions",
}


def tool(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / name), *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def rendered(path: Path) -> dict:
    text = path.read_text()
    for placeholder, value in PLACEHOLDERS.items():
        text = text.replace(placeholder, value)
    assert "${" not in text, "a placeholder without a test value"
    return yaml.safe_load(text)


def test_dockerfiles_pass_hadolint():
    result = tool("hadolint", *map(str, sorted((ROOT / "dockerfiles").glob("*.dockerfile"))))
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflows_pass_actionlint_and_zizmor():
    lint = tool("actionlint")
    assert lint.returncode == 0, lint.stdout
    audit = tool("zizmor", "--offline", ".github/workflows")
    assert audit.returncode == 0, audit.stdout + audit.stderr


@pytest.mark.parametrize("path", CLOUDBUILD, ids=lambda p: p.name)
def test_cloud_build_configs_parse_into_the_build_type(path: Path):
    config = yaml.safe_load(path.read_text())
    build = cloudbuild_v1.Build.pb()()
    json_format.ParseDict(config, build)  # unknown fields and bad enums raise
    assert build.steps
    assert "secretEnv" not in path.read_text() and "availableSecrets" not in path.read_text()
    assert all(name.startswith("_") for name in config.get("substitutions", {}))


def test_cloud_build_configs_match_the_cloudbuild_schema():
    result = tool(
        "check-jsonschema", "--builtin-schema", "vendor.cloudbuild", *map(str, CLOUDBUILD)
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_nothing_is_pushed_or_deployed_before_the_smoke_tests():
    config = yaml.safe_load((ROOT / "cloudbuild" / "build-and-deploy.yaml").read_text())
    order = [step["id"] for step in config["steps"]]
    assert "images" not in config  # pushes are explicit steps, after the smoke tests
    assert not any("waitFor" in step for step in config["steps"])  # strictly in order
    for smoke in ("smoke-test-api", "smoke-test-train"):
        assert order.index(smoke) < order.index("push") < order.index("deploy-api")
    assert order.index("push-train") < order.index("render-service") < order.index("deploy-api")
    pushes = [s for s in config["steps"] if s["id"].startswith("push")]
    assert all("--all-tags" in s["args"] for s in pushes)  # the commit tag and latest
    builds = [s for s in config["steps"] if s["id"].startswith("build")]
    assert all(any(a.endswith(":${_TAG}") for a in s["args"]) for s in builds)
    assert all(any(a.endswith(":latest") for a in s["args"]) for s in builds)


def test_cloud_run_service_probes_scaling_and_metrics_sidecar():
    service = rendered(ROOT / "deploy" / "cloudrun" / "service.yaml")
    assert (service["apiVersion"], service["kind"]) == ("serving.knative.dev/v1", "Service")
    template = service["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert int(annotations["autoscaling.knative.dev/minScale"]) >= 1
    assert int(annotations["autoscaling.knative.dev/maxScale"]) > 1
    spec = template["spec"]
    assert spec["containerConcurrency"] == 8  # the serving benchmark's concurrency on 2 cores
    api, collector = spec["containers"]
    port = api["ports"][0]["containerPort"]
    assert api["startupProbe"]["httpGet"] == {"path": "/ready", "port": port}
    assert api["livenessProbe"]["httpGet"] == {"path": "/health", "port": port}
    assert {"name": "HOTDOG_MODEL_URI", "value": PLACEHOLDERS["${MODEL_URI}"]} in api["env"]
    log = {"name": "HOTDOG_PREDICTION_LOG", "value": PLACEHOLDERS["${PREDICTION_LOG_URI}"]}
    assert log in api["env"]  # Cloud Run's disk is memory: the log goes to the bucket
    assert api["resources"]["limits"] == {"cpu": "2", "memory": "2Gi"}
    assert "cloud-run-gmp-sidecar" in collector["image"]
    assert "collector" in annotations["run.googleapis.com/container-dependencies"]


def test_vertex_model_spec_parses_into_the_model_type():
    spec = rendered(ROOT / "deploy" / "vertex" / "model.yaml")
    model = aiplatform_v1.Model.pb()()
    json_format.ParseDict(spec, model)
    container = model.container_spec
    # The routes the service answers when Vertex AI sets AIP_PREDICT_ROUTE/AIP_HEALTH_ROUTE to
    # these; the same as its defaults, so the image also works where they are not set.
    defaults = Settings.model_fields
    assert container.predict_route == defaults["predict_route"].default
    assert container.health_route == defaults["health_route"].default
    assert [p.container_port for p in container.ports] == [8080]
    assert model.artifact_uri.startswith("gs://")


def test_docker_context_leaves_out_data_runs_and_environments():
    rules = (ROOT / ".dockerignore").read_text().splitlines()
    assert rules[rules.index("*") - 1].startswith("#")  # everything out, then an allow-list
    allowed = [r for r in rules if r.startswith("!")]
    assert not any(r.startswith(("!data/raw", "!.venv", "!runs", "!.git")) for r in allowed)


def _locked(lock: Path) -> set[str]:
    names = set()
    for line in lock.read_text().splitlines():
        if line and not line.startswith((" ", "#")) and "==" in line:
            names.add(canonicalize_name(line.split("==")[0]))
    return names


@pytest.mark.parametrize(
    ("lock", "extras"), [("serve.txt", ["serve"]), ("train.txt", ["train", "gcp"])]
)
def test_lock_files_cover_their_extras(lock: str, extras: list[str]):
    """A dependency added to pyproject.toml without rerunning requirements/lock.sh would be
    missing from the image: every requirement of the extras is pinned in its lock file."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        wanted += [Requirement(r) for r in project["optional-dependencies"][extra]]
    names = {canonicalize_name(r.name) for r in wanted if r.name != "hotdog"}
    names -= {"torch", "torchvision"}  # installed from the index that picks their build
    assert names <= _locked(ROOT / "requirements" / lock), "run: bash requirements/lock.sh"
