"""The DVC pipeline (dvc.yaml): its declared code, the remote checks, and real `dvc exp run`s.

The expensive part, a whole pipeline run, happens once (`sample_run`): the documented offline
sample run (`python -m hotdog.pipeline.sample`) on a copy of the working tree whose remote points
at a recording GCS emulator, with a tiny recipe. Every slow test checks one behaviour on it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from hotdog.pipeline.stage_deps import declared_code, load_pipeline, stage_code
from tests.conftest import ROOT, start_gcs_emulator

DVC = str(Path(sys.executable).with_name("dvc"))
# The smallest recipe that still runs every stage: Lite0 at 128 px, one full epoch, no flips.
TINY = [
    "model=efficientnet_lite0",
    "model.image_size=128",
    "model.train_image_size=112",
    "model.freeze_backbone_epochs=0",
    "trainer.max_epochs=1",
    "export.image_size=128",
    "export.calibration_images=8",
]
# Local state of this checkout that a fresh clone would not have.
SKIPPED = {
    ROOT: {".git", ".venv", "runs", "models", "wandb", "multirun", "outputs"},
    ROOT / "data": {"raw", "prepared"},
    ROOT / ".dvc": {"cache", "tmp", "config.local"},
}


def _ignored(folder: str, names: list[str]) -> set[str]:
    caches = {n for n in names if n in {"__pycache__", ".pytest_cache", ".ruff_cache"}}
    return caches | (SKIPPED.get(Path(folder), set()) & set(names))


def _run(*args: str, cwd: Path, check: bool = True, timeout: float = 900, env=None):
    # The stages call `python`: the one of this environment, as in an activated virtualenv.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    done = subprocess.run(
        list(args),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        # gcsfs hangs on emulators while it probes for hierarchical-namespace buckets.
        env={
            **os.environ,
            "PATH": path,
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
            **(env or {}),
        },
    )
    if check:
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


def _clone(destination: Path) -> Path:
    """A copy of the working tree in its own git repository, everything committed."""
    shutil.copytree(ROOT, destination, ignore=_ignored)
    _run("git", "init", "-q", cwd=destination)
    _run("git", "add", "-A", cwd=destination)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    _run(*git, "commit", "-qm", "copy", cwd=destination)
    return destination


# --- fast: the code each stage runs is declared ------------------------------------------------


def test_dvc_yaml_lists_exactly_the_code_each_stage_imports():
    stages, params = load_pipeline()
    for name, stage in stages.items():
        derived, declared = stage_code(stage, params), declared_code(stage)
        missing, extra = sorted(set(derived) - set(declared)), sorted(set(declared) - set(derived))
        assert not missing and not extra, (
            f"dvc.yaml stage {name}: add {missing}, remove {extra} "
            "(python -m hotdog.pipeline.stage_deps prints the lists)"
        )
    # Files that once flagged no stage, or the wrong ones: run records; the sidecar schema
    # export writes (in serve/model_store.py until the core layout); the dataset layout prepare
    # reads (in data/datamodule.py until then). Serving code flags no stage.
    assert "hotdog/utils/run_info.py" in declared_code(stages["train"])
    assert "hotdog/utils/run_info.py" in declared_code(stages["evaluate"])
    assert "hotdog/core/artifact.py" in declared_code(stages["export"])
    assert "hotdog/core/dataset.py" in declared_code(stages["prepare"])
    declared = [path for stage in stages.values() for path in declared_code(stage)]
    assert not any(path.startswith("hotdog/serve/") for path in declared)


def test_stage_deps_cli_prints_the_lists_and_fails_on_a_difference(tmp_path: Path, capsys):
    from hotdog.pipeline import stage_deps

    assert stage_deps.main([]) == 0
    assert "train:\n  - hotdog/__init__.py\n" in capsys.readouterr().out
    shutil.copytree(ROOT / "hotdog", tmp_path / "hotdog")
    dvc_yaml = (ROOT / "dvc.yaml").read_text().replace("      - hotdog/report.py\n", "", 1)
    (tmp_path / "dvc.yaml").write_text(dvc_yaml)
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    assert stage_deps.main(["--repo", str(tmp_path)]) == 1
    assert "train:  # dvc.yaml differs\n" in capsys.readouterr().out
    assert stage_deps.main(["--repo", str(tmp_path), "--write"]) == 0
    assert (tmp_path / "dvc.yaml").read_text() == (ROOT / "dvc.yaml").read_text()


def test_stage_code_follows_lazy_relative_and_function_imports(tmp_path: Path):
    package = tmp_path / "hotdog"
    files = {
        "__init__.py": "",
        "entry.py": "from .lazy import Thing\n\ndef f():\n    import hotdog.late\n",
        "lazy/__init__.py": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from hotdog.lazy.real import Thing\n    from hotdog.lazy.other import Other\n"
        ),
        "lazy/real.py": "from hotdog import errors\n",
        "lazy/other.py": "",
        "late.py": "",
        "errors.py": "",
        "unused.py": "",
        "target.py": "",
    }
    for name, text in files.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    stage = {"cmd": "python -m hotdog.entry --config-name params", "params": ["model"]}
    params = {"model": {"_target_": "hotdog.target.Model"}}
    params["other"] = {"_target_": "hotdog.unused.X"}  # not a parameter of the stage
    assert stage_code(stage, params, tmp_path) == [
        "hotdog/__init__.py",
        "hotdog/entry.py",
        "hotdog/errors.py",
        "hotdog/late.py",
        "hotdog/lazy/__init__.py",
        "hotdog/lazy/real.py",
        "hotdog/target.py",
    ]


# --- fast: the remote check stops within seconds with one sentence ------------------------------


@pytest.fixture(scope="module")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Google Cloud Storage API server on 127.0.0.1 with the bucket of .dvc/config."""
    with start_gcs_emulator(tmp_path_factory.mktemp("gcs"), "hotdog-mlops") as url:
        yield url


@pytest.fixture
def remote_repo(tmp_path: Path, gcs_emulator: str) -> Path:
    """A git repository with the project's DVC config, its remote on the emulator."""
    (tmp_path / ".dvc").mkdir()
    shutil.copy(ROOT / ".dvc" / "config", tmp_path / ".dvc" / "config")
    _run("git", "init", "-q", cwd=tmp_path)
    _local_remote(tmp_path, endpointurl=gcs_emulator, allow_anonymous_login="true")
    return tmp_path


def _local_remote(repo: Path, **settings: str) -> None:
    """Settings of remote gcs in .dvc/config.local, as `dvc remote modify --local` writes them."""
    lines = "".join(f"    {key} = {value}\n" for key, value in settings.items())
    (repo / ".dvc" / "config.local").write_text(f"['remote \"gcs\"']\n{lines}")


def _use_emulator(project: Path, endpoint: str) -> None:
    _local_remote(project, endpointurl=endpoint, allow_anonymous_login="true")


def _remote(project: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "hotdog.pipeline.remote", "--repo", str(project), *args]
    env = {**_no_adc(project), **(env or {})}
    return _run(*command, cwd=ROOT, check=False, timeout=60, env=env)


def _no_adc(project: Path) -> dict[str, str]:
    """No application default credentials: a home folder without gcloud's files."""
    home = project.parent / f"{project.name}-home"  # outside the repository: git ignores it
    return {"HOME": str(home), "CLOUDSDK_CONFIG": str(home / "gcloud")}


def _remote_in_process(
    repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: str
) -> tuple[int, str]:
    """`python -m hotdog.pipeline.remote --repo REPO ARGS` in this process: exit code, stderr."""
    from hotdog.pipeline import remote

    for name, value in _no_adc(repo).items():
        monkeypatch.setenv(name, value)

    def no_dvc(command, **_):
        raise AssertionError(f"the DVC command started after a failed check: {command}")

    monkeypatch.setattr(remote.subprocess, "run", no_dvc)
    with pytest.raises(SystemExit) as stopped:
        remote.main(["--repo", str(repo), *args])
    return int(stopped.value.code or 0), capsys.readouterr().err


def test_remote_check_passes_then_runs_the_dvc_command(remote_repo: Path):
    done = _remote(remote_repo, "pull")
    assert "is reachable" in done.stdout and done.returncode == 0, done.stderr
    assert "Everything is up to date" in done.stdout + done.stderr


def test_wrong_bucket_is_one_sentence(remote_repo: Path, monkeypatch, capsys):
    settings = {"url": "gs://no-such-bucket/d", "allow_anonymous_login": "true"}
    _local_remote(remote_repo, endpointurl=_endpoint(remote_repo), **settings)
    code, stderr = _remote_in_process(remote_repo, monkeypatch, capsys, "pull")
    assert code == 2 and "Traceback" not in stderr
    assert "Bucket gs://no-such-bucket of remote gcs does not exist" in stderr


def test_missing_credentials_are_one_sentence(remote_repo: Path, monkeypatch, capsys):
    _local_remote(remote_repo, endpointurl=_endpoint(remote_repo))
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    code, stderr = _remote_in_process(remote_repo, monkeypatch, capsys, "pull")
    assert code == 2 and "Traceback" not in stderr
    assert "No Google Cloud credentials were found; set GOOGLE_APPLICATION_CREDENTIALS" in stderr
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(remote_repo / "missing-key.json"))
    code, stderr = _remote_in_process(remote_repo, monkeypatch, capsys, "push")
    assert code == 2 and "missing-key.json does not exist" in stderr


def test_stopped_emulator_is_one_sentence(remote_repo: Path, monkeypatch, capsys):
    _local_remote(remote_repo, endpointurl=f"http://127.0.0.1:{_free_port()}")
    code, stderr = _remote_in_process(remote_repo, monkeypatch, capsys, "pull")
    assert code == 2 and "does not answer" in stderr and stderr.count("\n") == 1


def _endpoint(repo: Path) -> str:
    text = (repo / ".dvc" / "config.local").read_text()
    return re.search(r"endpointurl = (\S+)", text).group(1)  # type: ignore[union-attr]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- slow: one offline sample run, several behaviours checked on it ------------------------------


class RecordingProxy(socketserver.ThreadingTCPServer):
    """A TCP proxy in front of the GCS emulator that records every connection it receives."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, target: str):
        self.target = target.removeprefix("http://").split(":")
        self.connections = 0
        super().__init__(("127.0.0.1", 0), _Forward)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Forward(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: RecordingProxy = self.server  # type: ignore[assignment]
        server.connections += 1
        host, port = server.target
        with socket.create_connection((host, int(port))) as upstream:
            pump = threading.Thread(target=_copy, args=(upstream, self.request), daemon=True)
            pump.start()
            _copy(self.request, upstream)
            pump.join(5)


def _copy(source: socket.socket, target: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            target.sendall(chunk)
        target.shutdown(socket.SHUT_WR)
    except OSError:
        pass


@pytest.fixture(scope="module")
def recording_gcs(gcs_emulator: str) -> Iterator[RecordingProxy]:
    proxy = RecordingProxy(gcs_emulator)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    yield proxy
    proxy.shutdown()
    proxy.server_close()


class SampleRun:
    def __init__(self, clone: Path, workspace: Path, done: subprocess.CompletedProcess):
        self.clone, self.workspace, self.done = clone, workspace, done
        self.output = done.stdout + done.stderr


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory: pytest.TempPathFactory, recording_gcs: RecordingProxy):
    """The documented sample run on a fresh clone without credentials, its remote (committed, so
    it is part of the clone) on the recording emulator; a tiny recipe."""
    clone = _clone(tmp_path_factory.mktemp("pipeline") / "hotdog")
    _run(DVC, "remote", "modify", "gcs", "endpointurl", recording_gcs.url, cwd=clone)
    _run(DVC, "remote", "modify", "gcs", "allow_anonymous_login", "true", cwd=clone)
    _run("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "gcs", cwd=clone)
    recording_gcs.connections = 0
    command = [sys.executable, "-m", "hotdog.pipeline.sample"]
    command += [arg for value in TINY for arg in ("-S", value)]
    done = _run(*command, cwd=clone, env=_no_adc(clone))
    return SampleRun(clone, clone / "runs" / "pipeline-sample", done)


@pytest.mark.slow
def test_sample_run_is_offline_and_leaves_the_checkout_alone(
    sample_run: SampleRun, recording_gcs: RecordingProxy
):
    assert "Sample pipeline done" in sample_run.done.stdout
    assert recording_gcs.connections == 0
    assert "credentials" not in sample_run.output and "Traceback" not in sample_run.output
    status = _run("git", "status", "--porcelain", cwd=sample_run.clone).stdout
    assert status == ""  # dvc.lock, params.yaml, reports/ as committed
    # The proxy does record: the remote check of the clone reaches the emulator through it.
    assert "is reachable" in _remote(sample_run.clone).stdout
    assert recording_gcs.connections > 0


@pytest.mark.slow
def test_sample_run_reproduces_every_stage(sample_run: SampleRun):
    workspace = sample_run.workspace
    metrics = json.loads((workspace / "reports" / "evaluate" / "metrics.json").read_text())
    assert metrics["counts"]["images"] == 40 and 0 <= metrics["accuracy"] <= 1
    data = json.loads((workspace / "reports" / "data.json").read_text())
    assert data["images"] == 80 and data["dropped"] == []
    for plot in ("predictions.csv", "roc.csv", "precision_recall.csv", "confusion_matrix.png"):
        assert (workspace / "reports" / "evaluate" / plot).is_file(), plot
    lock = yaml.safe_load((workspace / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"prepare", "train", "evaluate", "export"}
    sidecar = json.loads((workspace / "models" / "export" / "model.int8.onnx.json").read_text())
    assert sidecar["data_config"]["input_size"] == 128 and sidecar["tta_hflip"] is False
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    assert params["prepare"]["raw"] == "data/sample"
    assert params["model"]["backbone"] == "tf_efficientnet_lite0"
    # DVCLive's per-epoch training metrics, where dvc.yaml declares them.
    training = json.loads((workspace / "reports" / "train" / "metrics.json").read_text())
    assert {"train", "val"} <= set(training) and "acc_best" in training["val"]
    curves = workspace / "reports" / "train" / "plots" / "metrics"
    assert (curves / "val" / "loss.tsv").is_file() and (curves / "train" / "loss.tsv").is_file()


@pytest.mark.slow
def test_second_repro_does_nothing(sample_run: SampleRun):
    checkpoint = sample_run.workspace / "models" / "train" / "checkpoints" / "best.ckpt"
    before = checkpoint.stat().st_mtime_ns
    done = _run(DVC, "repro", cwd=sample_run.workspace)
    assert "Data and pipelines are up to date" in done.stdout
    assert checkpoint.stat().st_mtime_ns == before


def _changed_stages(workspace: Path, module: str) -> set[str]:
    """The stages `dvc status` reports after a change to the file ``module``."""
    path = workspace / module
    original = path.read_text()
    path.write_text(original + "\n# touched\n")
    try:
        status = _stage_status(workspace)
    finally:
        path.write_text(original)
    return status


def _stage_status(workspace: Path) -> set[str]:
    """The pipeline stages `dvc status` reports as changed (data/raw.dvc is not pulled here)."""
    status = json.loads(_run(DVC, "status", "--json", cwd=workspace).stdout)
    return set(status) - {"data/raw.dvc"}


@pytest.mark.slow
def test_touching_a_module_a_stage_imports_reports_that_stage(sample_run: SampleRun):
    workspace = sample_run.workspace
    everything = {"prepare", "train", "evaluate", "export"}
    assert _changed_stages(workspace, "hotdog/utils/run_info.py") == {"train", "evaluate"}
    assert _changed_stages(workspace, "hotdog/core/artifact.py") == everything - {"prepare"}
    assert _changed_stages(workspace, "hotdog/core/dataset.py") == everything
    assert _changed_stages(workspace, "hotdog/export.py") == {"export"}
    assert _changed_stages(workspace, "hotdog/serve/model_store.py") == set()
    assert _stage_status(workspace) == set()


@pytest.mark.slow
def test_a_group_switch_reruns_train_evaluate_export_only(sample_run: SampleRun):
    """`-S model=resnet18` picks another Hydra config group option, as on the command line;
    prepare's parameters are unchanged, so DVC skips it."""
    import torch

    workspace = sample_run.workspace
    overrides = [*TINY, "model=resnet18", "optimizer.lr=3e-4", "prepare.raw=data/sample"]
    # No model hub here: resnet18 trains from scratch; its int8 export is not gated.
    overrides += ["model.pretrained=false", "export.max_int8_drop=100"]
    overrides += ["logger=wandb"]  # W&B (offline here) beside DVCLive
    options = [arg for value in overrides for arg in ("-S", value)]
    done = _run(DVC, "exp", "run", "-n", "resnet", *options, cwd=workspace)
    assert "Stage 'prepare' didn't change, skipping" in done.stdout
    assert all(f"Running stage '{stage}'" in done.stdout for stage in ("train", "evaluate"))
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    assert params["model"]["backbone"] == "resnet18" and params["optimizer"]["lr"] == 3e-4
    checkpoint = torch.load(
        workspace / "models" / "train" / "checkpoints" / "best.ckpt",
        map_location="cpu",
        weights_only=False,
    )
    assert checkpoint["hotdog_inference"]["backbone"] == "resnet18"
    sidecar = json.loads((workspace / "models" / "export" / "model.onnx.json").read_text())
    assert sidecar["backbone"] == "resnet18"
    assert list((workspace / "models" / "train" / "wandb").glob("offline-run-*"))
    shown = json.dumps(json.loads(_run(DVC, "exp", "show", "--json", cwd=workspace).stdout))
    assert "resnet18" in shown and "reports/train/metrics.json" in shown
    # The learning curves of the two experiments, side by side.
    first = re.search(r"Ran experiment\(s\): (\S+)", sample_run.output).group(1)  # type: ignore[union-attr]
    plots = _run(DVC, "plots", "diff", first, "resnet", "--json", cwd=workspace).stdout
    curves = {k: v for k, v in json.loads(plots)["data"].items() if k.startswith("reports/train")}
    val_loss = next(plot for key, plot in curves.items() if key.endswith("val/loss.tsv"))[0]
    drawn = {point["rev"] for point in val_loss["content"]["data"]["values"]}
    assert {first, "resnet"} <= drawn, drawn


@pytest.mark.slow
def test_a_corrupt_raw_image_stops_prepare_naming_it(sample_run: SampleRun):
    workspace = sample_run.workspace
    bad = workspace / "data" / "sample" / "train" / "hot_dog" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    options = [arg for value in ("prepare.raw=data/sample", *TINY) for arg in ("-S", value)]
    try:
        done = _run(DVC, "exp", "run", *options, cwd=workspace, check=False)
    finally:
        bad.unlink()
    assert done.returncode != 0
    assert "broken.jpg" in done.stdout + done.stderr
    assert "skip_corrupt" in done.stdout + done.stderr


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
        time.sleep(3)


@pytest.mark.slow
def test_queued_sweep_runs_every_experiment_with_its_parameters(sample_run: SampleRun):
    workspace = sample_run.workspace
    quick = [arg for value in ("prepare.raw=data/sample", *TINY) for arg in ("-S", value)]
    sweep = {"queued-lr-1e-3": 1e-3, "queued-lr-3e-4": 3e-4}
    for name, lr in sweep.items():
        overrides = [*quick, "-S", f"optimizer.lr={lr}"]
        done = _run(DVC, "exp", "run", "--queue", "-n", name, *overrides, cwd=workspace)
        assert f"Queued experiment '{name}'" in done.stdout
    # The worker runs in the background, each experiment in a temporary copy of the repository
    # made from its git commit (the sample workspace commits every file) plus queued changes.
    assert "Started '1' new" in _run(DVC, "queue", "start", "-j", "1", cwd=workspace).stdout
    status = _wait_for_queue(workspace, timeout=900)
    for name in sweep:
        assert re.search(rf"\b{name}\s.*\bSuccess$", status, re.MULTILINE), status

    shown = json.loads(_run(DVC, "exp", "show", "--json", cwd=workspace).stdout)
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
def test_push_and_pull_through_gcs_restore_identical_files(
    sample_run: SampleRun, gcs_emulator: str
):
    workspace = sample_run.workspace
    # The sample workspace has no remote: give it the emulator's bucket, as a user would.
    settings = {"url": "gs://hotdog-mlops/dvc", "allow_anonymous_login": "true"}
    _local_remote(workspace, endpointurl=gcs_emulator, **settings)
    with (workspace / ".dvc" / "config.local").open("a") as config:
        config.write("[core]\n    remote = gcs\n")
    _run(DVC, "checkout", "prepare", "train", cwd=workspace)  # as after the last good run
    outputs = [
        workspace / "models" / "train" / "checkpoints" / "best.ckpt",
        *sorted((workspace / "data" / "prepared").rglob("*.jpg")),
    ]
    before = {path: path.read_bytes() for path in outputs}
    done = _remote(workspace, "push", "prepare", "train")
    assert "is reachable" in done.stdout and "pushed" in done.stdout + done.stderr, done.stderr
    shutil.rmtree(workspace / ".dvc" / "cache")
    shutil.rmtree(workspace / "data" / "prepared")
    outputs[0].unlink()
    _remote(workspace, "pull", "prepare", "train")
    assert {path: path.read_bytes() for path in outputs} == before
