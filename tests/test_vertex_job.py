"""hotdog-vertex: the CustomJob built from configs/vertex/ and training overrides, validated
against aiplatform_v1 types; Vertex AI itself is replaced by a recording client."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import pytest
from google.cloud import aiplatform_v1

from hotdog.cloud import vertex_job
from tests.conftest import CONFIGS

SETTINGS = [
    "vertex.project=my-project",
    "vertex.staging_bucket=gs://my-bucket",
    "vertex.image_uri=europe-west4-docker.pkg.dev/my-project/hotdog/train:abc1234",
]


@pytest.fixture(autouse=True)
def _no_cloud_settings_from_the_environment(monkeypatch):
    for name in ("GOOGLE_CLOUD_PROJECT", "HOTDOG_BUCKET", "HOTDOG_TRAIN_IMAGE", "HOTDOG_REGION"):
        monkeypatch.delenv(name, raising=False)


def dry_run(capsys, *overrides: str) -> dict:
    vertex_job.main(["--dry-run", *overrides])
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(
    "option", sorted(p.stem for p in (CONFIGS / "vertex").glob("*.yaml") if p.stem[0] != "_")
)
def test_every_job_option_builds_a_valid_custom_job(capsys, option):
    job = dry_run(capsys, f"vertex={option}", *SETTINGS)
    pools = job["jobSpec"]["workerPoolSpecs"]
    assert pools[0]["replicaCount"] == "1"
    assert job["jobSpec"]["baseOutputDirectory"]["outputUriPrefix"].startswith(
        "gs://my-bucket/vertex/hotdog-train-"
    )
    assert all(p["containerSpec"]["imageUri"].endswith("train:abc1234") for p in pools)


def test_ddp_job_has_a_primary_and_workers_and_training_overrides_last(capsys):
    job = dry_run(
        capsys, "vertex=gpu_ddp", "vertex.replica_count=4", *SETTINGS, "model=efficientnet_lite0"
    )
    primary, workers = job["jobSpec"]["workerPoolSpecs"]
    assert (primary["replicaCount"], workers["replicaCount"]) == ("1", "3")
    args = workers["containerSpec"]["args"]
    assert args[:2] == ["trainer=vertex_ddp", "trainer.num_nodes=4"]
    assert "trainer.accelerator=gpu" in args and args[-1] == "model=efficientnet_lite0"
    assert primary["machineSpec"]["acceleratorType"] == "NVIDIA_TESLA_T4"
    assert job["jobSpec"]["scheduling"]["restartJobOnWorkerRestart"] is True


def test_the_wandb_key_travels_as_a_secret_name_only(capsys):
    secret = "projects/my-project/secrets/wandb-api-key/versions/latest"
    job = dry_run(capsys, *SETTINGS, f"vertex.wandb_key_secret={secret}")
    env = job["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]["env"]
    assert {"name": "HOTDOG_WANDB_KEY_SECRET", "value": secret} in env
    assert not any(e["name"] == "WANDB_API_KEY" for e in env)


def test_settings_come_from_the_environment(capsys, monkeypatch):
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "env-project")
    monkeypatch.setenv("HOTDOG_BUCKET", "gs://env-bucket")
    monkeypatch.setenv("HOTDOG_TRAIN_IMAGE", "europe-west4-docker.pkg.dev/env-project/h/t:1")
    job = dry_run(capsys)
    assert job["jobSpec"]["baseOutputDirectory"]["outputUriPrefix"].startswith("gs://env-bucket/")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (SETTINGS[1:], "vertex.project is not set; pass vertex.project=... or set GOOGLE_CLOUD"),
        (SETTINGS[:2], "vertex.image_uri is not set"),
        ([*SETTINGS, "vertex.replica_count=0"], "vertex.replica_count=0 is not a number"),
        ([*SETTINGS, "vertex.machine_type=n1-superfast"], "is not a Vertex AI machine type"),
        ([*SETTINGS, "vertex=gpu", "vertex.machine_type=e2-standard-8"], "runs on n1- machines"),
        ([*SETTINGS, "vertex.accelerator_count=1"], "go together"),
        ([*SETTINGS, "vertex.staging_bucket=my-bucket"], "must be a gs:// URI"),
        ([*SETTINGS, "model=no_such_model"], "no_such_model"),
        ([*SETTINGS, "trainer.max_epochs=abc"], "trainer.max_epochs must be a whole number"),
    ],
)
def test_bad_settings_are_refused_before_submission(capsys, monkeypatch, overrides, message):
    monkeypatch.setattr(vertex_job, "submit", pytest.fail)  # never reached
    with pytest.raises(SystemExit) as stopped:
        vertex_job.main(overrides)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert err.count("\n") == 1  # one sentence


def test_a_bad_field_fails_validation_against_the_api_type():
    job = {"display_name": "x", "job_spec": {"worker_pool_specs": [{"replica_cnt": 1}]}}
    with pytest.raises(vertex_job.JobSpecError, match="not valid for Vertex AI"):
        vertex_job.validate(job)
    two_primaries = {"display_name": "x", "job_spec": {"worker_pool_specs": [{"replica_count": 2}]}}
    with pytest.raises(vertex_job.JobSpecError, match="exactly one replica"):
        vertex_job.validate(two_primaries)


class RecordingJobService:
    """Stands in for Vertex AI's JobServiceClient, which needs Google Cloud."""

    calls: ClassVar[list] = []

    def __init__(self, client_options: dict) -> None:
        self.endpoint = client_options["api_endpoint"]

    def create_custom_job(self, parent: str, custom_job: aiplatform_v1.CustomJob):
        RecordingJobService.calls.append((self.endpoint, parent, custom_job))
        return aiplatform_v1.CustomJob(name=f"{parent}/customJobs/123")


def test_submitting_without_credentials_is_one_sentence(capsys, monkeypatch, tmp_path: Path):
    """The real client and Google's real credential lookup, with nothing to find."""
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("NO_GCE_CHECK", "True")  # no metadata server to ask on this machine
    with pytest.raises(SystemExit) as stop:
        vertex_job.main(SETTINGS)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "Traceback" not in err
    assert err.startswith("error: No Google Cloud credentials were found; run `gcloud auth")
    assert err.count("\n") == 1


def test_submit_sends_the_validated_job_to_the_regional_endpoint(capsys, monkeypatch):
    monkeypatch.setattr(aiplatform_v1, "JobServiceClient", RecordingJobService)
    vertex_job.main([*SETTINGS, "vertex.region=us-central1", "trainer.max_epochs=3"])
    ((endpoint, parent, job),) = RecordingJobService.calls
    assert endpoint == "us-central1-aiplatform.googleapis.com"
    assert parent == "projects/my-project/locations/us-central1"
    assert isinstance(job, aiplatform_v1.CustomJob)
    assert list(job.job_spec.worker_pool_specs[0].container_spec.args) == ["trainer.max_epochs=3"]
    assert "customJobs/123" in capsys.readouterr().out
