"""The DVC pipeline (dvc.yaml) run for real with `dvc exp run` on the shipped sample."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, start_gcs_emulator

DVC = str(Path(sys.executable).with_name("dvc"))
# Enough to exercise every stage quickly: a frozen epoch and a full one on the 32 sample photos.
SAMPLE_RUN = [
    "-S",
    "prepare.raw=data/sample",
    "-S",
    "trainer.max_epochs=2",
    "-S",
    "model.freeze_backbone_epochs=1",
]
# Outputs and local state of this checkout, which a fresh clone would not have.
SKIPPED = {
    ROOT: {".git", ".venv", "runs", "models", "reports", "params.yaml", "dvc.lock", "wandb"},
    ROOT / "data": {"raw", "prepared"},
}


def _ignored(folder: str, names: list[str]) -> set[str]:
    caches = {n for n in names if n in {"__pycache__", ".pytest_cache", ".ruff_cache"}}
    return caches | (SKIPPED.get(Path(folder), set()) & set(names))


def _run(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    # The stages call `python`: the one of this environment, as in an activated virtualenv.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    done = subprocess.run(
        list(args),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
        # gcsfs hangs on emulators while it probes for hierarchical-namespace buckets.
        env={**os.environ, "PATH": path, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"},
    )
    if check:
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the working tree in its own git repository, after one pipeline run."""
    root = tmp_path_factory.mktemp("pipeline") / "hotdog"
    shutil.copytree(ROOT, root, ignore=_ignored)
    _run("git", "init", "-q", cwd=root)
    _run("git", "add", "-A", cwd=root)
    _run("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy", cwd=root)
    _run(DVC, "exp", "run", *SAMPLE_RUN, cwd=root)
    return root


@pytest.mark.slow
def test_exp_run_reproduces_every_stage_on_the_sample(project: Path):
    metrics = json.loads((project / "reports" / "evaluate" / "metrics.json").read_text())
    assert metrics["counts"]["images"] == 40 and 0.5 <= metrics["accuracy"] <= 1
    data = json.loads((project / "reports" / "data.json").read_text())
    assert data["images"] == 80 and data["dropped"] == []
    for plot in ("predictions.csv", "roc.csv", "precision_recall.csv", "confusion_matrix.png"):
        assert (project / "reports" / "evaluate" / plot).is_file(), plot
    lock = (project / "dvc.lock").read_text()
    assert all(f"  {stage}:" in lock for stage in ("prepare", "train", "evaluate", "export"))
    export = json.loads((project / "reports" / "export.json").read_text())
    assert export["int8"] == "models/export/model.int8.onnx"
    for name in ("model.onnx", "model.onnx.json", "model.int8.onnx", "model.int8.onnx.json"):
        assert (project / "models" / "export" / name).is_file(), name
    sidecar = json.loads((project / "models" / "export" / "model.int8.onnx.json").read_text())
    assert sidecar["data_config"]["input_size"] == 224 and sidecar["tta_hflip"] is False
    assert "raw: data/sample" in (project / "params.yaml").read_text()


@pytest.mark.slow
def test_second_repro_does_nothing(project: Path):
    checkpoint = project / "models" / "train" / "checkpoints" / "best.ckpt"
    before = checkpoint.stat().st_mtime_ns
    done = _run(DVC, "repro", cwd=project)
    assert "Data and pipelines are up to date" in done.stdout
    assert checkpoint.stat().st_mtime_ns == before


@pytest.mark.slow
def test_changing_a_training_parameter_reruns_only_train_and_evaluate(project: Path):
    done = _run(DVC, "exp", "run", *SAMPLE_RUN, "-S", "optimizer.lr=0.001", cwd=project)
    output = done.stdout
    assert "Stage 'prepare' didn't change, skipping" in output
    assert all(f"Running stage '{stage}'" in output for stage in ("train", "evaluate", "export"))
    assert "lr: 0.001" in (project / "params.yaml").read_text()


@pytest.mark.slow
def test_exp_run_switches_a_config_group(project: Path):
    """`-S model=resnet18` picks another Hydra config group option, as on the command line."""
    import torch

    overrides = ["-S", "model=resnet18", "-S", "optimizer.lr=3e-4"]
    # No model hub here: resnet18 trains from scratch; its int8 export is not gated.
    overrides += ["-S", "model.pretrained=false", "-S", "export.max_int8_drop=100"]
    _run(DVC, "exp", "run", *SAMPLE_RUN, *overrides, cwd=project)
    params = (project / "params.yaml").read_text()
    assert "backbone: resnet18" in params and "lr: 0.0003" in params
    checkpoint = torch.load(
        project / "models" / "train" / "checkpoints" / "best.ckpt",
        map_location="cpu",
        weights_only=False,
    )
    assert checkpoint["hotdog_inference"]["backbone"] == "resnet18"
    sidecar = json.loads((project / "models" / "export" / "model.onnx.json").read_text())
    assert sidecar["backbone"] == "resnet18"
    shown = json.loads(_run(DVC, "exp", "show", "--json", cwd=project).stdout)
    assert "resnet18" in json.dumps(shown)


def _wait_for_queue(project: Path, timeout: float, no_worker: float = 60) -> str:
    """Poll `dvc queue status` until no task is queued or running; its last output.

    Fails after `timeout` seconds, or once no worker has been up for `no_worker` seconds.
    """
    start = last_worker = time.monotonic()
    while True:
        status = _run(DVC, "queue", "status", cwd=project).stdout
        if not any(line.endswith(("Queued", "Running")) for line in status.splitlines()):
            return status
        now = time.monotonic()
        if "Worker status: 0 active, 0 idle" not in status:
            last_worker = now
        if now - start > timeout or now - last_worker > no_worker:
            _run(DVC, "queue", "stop", "--kill", cwd=project, check=False)
            pytest.fail(f"the queue did not finish ({now - start:.0f} s):\n{status}")
        time.sleep(5)


@pytest.mark.slow
def test_queued_sweep_runs_every_experiment_with_its_parameters(project: Path):
    # One epoch without the frozen phase: the quickest run that still trains and evaluates.
    quick = ["-S", "prepare.raw=data/sample", "-S", "trainer.max_epochs=1"]
    quick += ["-S", "model.freeze_backbone_epochs=0"]
    sweep = {"queued-lr-1e-3": 1e-3, "queued-lr-3e-4": 3e-4}
    for name, lr in sweep.items():
        overrides = [*quick, "-S", f"optimizer.lr={lr}"]
        done = _run(DVC, "exp", "run", "--queue", "-n", name, *overrides, cwd=project)
        assert f"Queued experiment '{name}'" in done.stdout
    # The worker runs in the background, each experiment in a temporary copy of the repository
    # made from its git commit (the fixture commits every file) plus the queued changes.
    assert "Started '1' new" in _run(DVC, "queue", "start", "-j", "1", cwd=project).stdout
    status = _wait_for_queue(project, timeout=900)
    for name in sweep:
        assert re.search(rf"\b{name}\s.*\bSuccess$", status, re.MULTILINE), status

    shown = json.loads(_run(DVC, "exp", "show", "--json", cwd=project).stdout)
    experiments = {
        exp["name"]: exp for baseline in shown for exp in baseline.get("experiments") or []
    }
    for name, lr in sweep.items():
        assert name in experiments, sorted(experiments)
        exp = experiments[name]
        assert exp["executor"]["state"] == "success"
        data = exp["revs"][0]["data"]
        params = data["params"]["params.yaml"]["data"]
        assert params["optimizer"]["lr"] == lr and params["trainer"]["max_epochs"] == 1
        metrics = data["metrics"]["reports/evaluate/metrics.json"]["data"]
        assert metrics["counts"]["images"] == 40 and 0 <= metrics["accuracy"] <= 1


@pytest.mark.slow
def test_a_corrupt_raw_image_stops_prepare_naming_it(project: Path):
    bad = project / "data" / "sample" / "train" / "hot_dog" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    try:
        done = _run(DVC, "exp", "run", *SAMPLE_RUN, cwd=project, check=False)
    finally:
        bad.unlink()
    assert done.returncode != 0
    assert "broken.jpg" in done.stdout + done.stderr
    assert "skip_corrupt" in done.stdout + done.stderr


@pytest.fixture(scope="module")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Google Cloud Storage API server on 127.0.0.1 with the bucket of .dvc/config."""
    with start_gcs_emulator(tmp_path_factory.mktemp("gcs"), "hotdog-mlops") as url:
        yield url


def _use_emulator(project: Path, endpoint: str) -> None:
    _run(DVC, "remote", "modify", "--local", "gcs", "endpointurl", endpoint, cwd=project)
    _run(DVC, "remote", "modify", "--local", "gcs", "allow_anonymous_login", "true", cwd=project)


def _check(project: Path) -> subprocess.CompletedProcess:
    return _run(
        sys.executable,
        "-m",
        "hotdog.pipeline.remote",
        "--repo",
        str(project),
        cwd=ROOT,
        check=False,
    )


@pytest.mark.slow
def test_push_and_pull_through_gcs_restore_identical_files(project: Path, gcs_emulator: str):
    _run(DVC, "exp", "run", *SAMPLE_RUN, cwd=project)  # outputs as after a good run
    _use_emulator(project, gcs_emulator)
    assert "is reachable" in _check(project).stdout
    outputs = [
        project / "models" / "train" / "checkpoints" / "best.ckpt",
        *sorted((project / "data" / "prepared").rglob("*.jpg")),
    ]
    before = {path: path.read_bytes() for path in outputs}
    done = _run(DVC, "push", "prepare", "train", cwd=project)
    assert "files pushed" in done.stdout
    shutil.rmtree(project / ".dvc" / "cache")
    shutil.rmtree(project / "data" / "prepared")
    outputs[0].unlink()
    _run(DVC, "pull", "prepare", "train", cwd=project)
    assert {path: path.read_bytes() for path in outputs} == before


@pytest.mark.slow
def test_missing_bucket_or_credentials_are_one_sentence(project: Path, gcs_emulator: str):
    _use_emulator(project, gcs_emulator)
    _run(DVC, "remote", "modify", "--local", "gcs", "url", "gs://no-such-bucket/dvc", cwd=project)
    try:
        done = _check(project)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert "Bucket gs://no-such-bucket of remote gcs does not exist" in done.stderr
    finally:
        _run(DVC, "remote", "modify", "--local", "--unset", "gcs", "url", cwd=project)
    _run(DVC, "remote", "modify", "--local", "gcs", "allow_anonymous_login", "false", cwd=project)
    os.environ["GOOGLE_APPLICATION_CREDENTIALS"] = str(project / "missing-key.json")
    try:
        done = _check(project)
    finally:
        del os.environ["GOOGLE_APPLICATION_CREDENTIALS"]
    assert done.returncode == 2 and "missing-key.json does not exist" in done.stderr
    _run(
        DVC, "remote", "modify", "--local", "gcs", "endpointurl", "http://127.0.0.1:9", cwd=project
    )
    done = _check(project)
    assert done.returncode == 2 and "does not answer" in done.stderr
