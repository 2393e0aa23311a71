"""hotdog-release against a real GCS API server (the emulator): publish, deploy, roll back."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from hotdog.cloud import release
from hotdog.core.artifact import InferenceInfo, ModelMetadata
from hotdog.core.preprocessing import DataConfig
from tests.conftest import ROOT, refusing_storage, start_gcs_emulator

BUCKET = "gs://hotdog-models"
IMAGE = "europe-west4-docker.pkg.dev/p/hotdog/api:abc1234"
ACCOUNT = "hotdog-api@p.iam.gserviceaccount.com"


@pytest.fixture
def gcs(tmp_path: Path, monkeypatch) -> Iterator[str]:
    with start_gcs_emulator(tmp_path / "gcs", "hotdog-models") as url:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", url)
        monkeypatch.setenv("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
        yield url


def export_dir(tmp_path: Path, content: bytes) -> Path:
    """An export folder: the int8 model and the sidecar that vouches for it."""
    folder = tmp_path / f"export-{hashlib.sha256(content).hexdigest()[:6]}"
    folder.mkdir()
    (folder / "model.int8.onnx").write_bytes(content)
    inference = InferenceInfo(
        ("hot_dog", "not_hot_dog"), "tf_efficientnet_lite0", DataConfig(), False
    )
    sidecar = ModelMetadata(inference, "v", "int8", hashlib.sha256(content).hexdigest())
    (folder / "model.int8.onnx.json").write_text(sidecar.to_json())
    return folder


def cli(capsys, *args: str) -> tuple[int, str, str]:
    try:
        release.main(list(args))
        code = 0
    except SystemExit as stop:
        code = int(stop.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_publish_deploy_and_roll_back(gcs: str, tmp_path: Path, capsys):
    first = release.publish(export_dir(tmp_path, b"model one"), BUCKET, "v1")
    assert first == f"{BUCKET}/models/v1"
    release.publish(export_dir(tmp_path, b"model two"), BUCKET, "v2")
    service = tmp_path / "service.yaml"
    common = ["--bucket", BUCKET, "--image", IMAGE, "--service-account", ACCOUNT]
    common += ["--out", str(service), "--template", str(ROOT / release.SERVICE_TEMPLATE)]

    for version in ("v1", "v2"):
        code, out, _ = cli(capsys, "deploy", version, *common)
        assert code == 0 and f"models/{version}/model.int8.onnx" in out
    api = yaml.safe_load(service.read_text())["spec"]["template"]["spec"]["containers"][0]
    assert api["image"] == IMAGE
    assert {"name": "HOTDOG_MODEL_URI", "value": f"{BUCKET}/models/v2/model.int8.onnx"} in api[
        "env"
    ]
    assert {"name": "HOTDOG_PREDICTION_LOG", "value": f"{BUCKET}/predictions"} in api["env"]

    code, out, _ = cli(capsys, "rollback", *common)
    assert code == 0 and "models/v1/model.int8.onnx" in out
    assert "models/v1/" in service.read_text()
    history = [entry["version"] for entry in release.read_releases(BUCKET)]
    assert history == ["v1", "v2", "v1"]


def test_versions_are_immutable_and_checked(gcs: str, tmp_path: Path, capsys):
    release.publish(export_dir(tmp_path, b"model one"), BUCKET, "v1")
    code, _, err = cli(capsys, "publish", str(export_dir(tmp_path, b"other")), "--bucket", BUCKET)
    assert code == 0  # a new version name by default
    code, _, err = cli(
        capsys, "publish", str(export_dir(tmp_path, b"x")), "--bucket", BUCKET, "--version", "v1"
    )
    assert code == 2 and "already exists and versions are immutable" in err

    # A model whose bytes no longer match its sidecar is never deployed.
    with release._fs(BUCKET).open(f"{BUCKET}/models/v1/model.int8.onnx", "wb") as out:
        out.write(b"tampered")
    code, _, err = cli(
        capsys, "deploy", "v1", "--bucket", BUCKET, "--image", IMAGE, "--service-account", ACCOUNT
    )
    assert code == 2 and "Version v1 cannot be deployed" in err and "Traceback" not in err
    assert "sidecar expects" in err and err.count("\n") == 1
    code, _, err = cli(
        capsys, "deploy", "v9", "--bucket", BUCKET, "--image", IMAGE, "--service-account", ACCOUNT
    )
    assert code == 2 and err.count("\n") == 1
    assert (
        f"Version v9 cannot be deployed ({BUCKET}/models/v9/model.int8.onnx does not exist)" in err
    )
    assert "publish the model with `hotdog-release publish`" in err


def test_a_bucket_that_cannot_be_written_is_one_sentence(gcs: str, tmp_path: Path, capsys):
    model = export_dir(tmp_path, b"model")
    code, _, err = cli(capsys, "publish", str(model), "--bucket", "gs://no-such-bucket")
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1
    assert err.startswith("error: Cannot write to gs://no-such-bucket (")
    assert "check that the bucket exists and that credentials with write access" in err


def test_nothing_to_publish_or_roll_back_is_one_sentence(gcs: str, tmp_path: Path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = cli(capsys, "publish", str(empty), "--bucket", BUCKET)
    assert code == 2 and err.startswith("error: Nothing to publish") and err.count("\n") == 1
    code, _, err = cli(
        capsys, "rollback", "--bucket", BUCKET, "--image", IMAGE, "--service-account", ACCOUNT
    )
    assert code == 2 and "records no release; deploy one first" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--bucket", "hotdog-models"],
            "argument --bucket: must be gs://BUCKET, not 'hotdog-models'",
        ),
        (
            ["--bucket", BUCKET, "--version", "bad/version name"],
            "argument --version: may contain only letters, digits, '.', '-' and '_'",
        ),
    ],
)
def test_a_bad_bucket_or_version_is_refused_before_any_upload(
    tmp_path: Path, capsys, args: list[str], message: str
):
    code, _, err = cli(capsys, "publish", str(export_dir(tmp_path, b"model")), *args)
    assert code == 2 and message in err and "Traceback" not in err


def test_a_bucket_that_cannot_be_read_is_not_taken_for_an_empty_history(tmp_path: Path):
    """A storage API that refuses every read must not look like "no release yet": rollback and
    deploy say the bucket cannot be read, in one sentence."""
    common = ["--bucket", BUCKET, "--image", IMAGE, "--service-account", ACCOUNT]
    common += ["--out", str(tmp_path / "service.yaml")]
    with refusing_storage() as url:
        env = {**os.environ, "STORAGE_EMULATOR_HOST": url}
        env["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
        answers = {
            command: subprocess.run(
                [sys.executable, "-m", "hotdog.cloud.release", *command, *common],
                capture_output=True,
                text=True,
                timeout=60,
                env=env,
            )
            for command in (("rollback",), ("deploy", "v1"))
        }
    rollback, deploy = answers[("rollback",)], answers[("deploy", "v1")]
    assert rollback.returncode == 2 and "Traceback" not in rollback.stderr
    assert f"{BUCKET}/models/releases.json cannot be read (HttpError: Invalid request" in (
        rollback.stderr
    )
    assert "records no release" not in rollback.stderr
    assert deploy.returncode == 2 and "Traceback" not in deploy.stderr
    assert (
        "Version v1 cannot be deployed: gs://hotdog-models/models/v1/model.int8.onnx cannot be"
        in (deploy.stderr)
    )
    assert "publish the model" not in deploy.stderr
    assert not (tmp_path / "service.yaml").exists()
