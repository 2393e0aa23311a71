"""The DVC pipeline (dvc.yaml) run for real with `dvc exp run` on the shipped sample."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

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
        env={**os.environ, "PATH": path},
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
    assert all(f"  {stage}:" in lock for stage in ("prepare", "train", "evaluate"))
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
    assert "Running stage 'train'" in output and "Running stage 'evaluate'" in output
    assert "lr: 0.001" in (project / "params.yaml").read_text()


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
