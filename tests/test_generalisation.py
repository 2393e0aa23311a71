"""Off-distribution evaluation: extra evaluation-only sets, calibration, per-category accuracy,
the corruption table, and the guarantee that fitting never reads the development sets."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from PIL import Image

from hotdog.models import HotdogClassifier
from hotdog.report import accuracy_per_category, expected_calibration_error
from hotdog.robustness import CORRUPTIONS, robustness_report
from hotdog.train import train
from tests.conftest import copy_sample


def test_expected_calibration_error_measures_overconfidence():
    labels = torch.tensor([0, 0, 1, 1])
    # 90 % confident, right half the time: a gap of 0.4. Right every time: a gap of 0.1.
    confident = torch.tensor([[0.9, 0.1]] * 4)
    assert expected_calibration_error(confident, labels) == pytest.approx(0.4)
    honest = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.1, 0.9]])
    assert expected_calibration_error(honest, labels) == pytest.approx(0.1)


def test_accuracy_per_category_reads_imagenet_style_names_only():
    files = [Path("chilidog (1).jpg"), Path("food (12).jpg"), Path("food (3).jpg")]
    table = accuracy_per_category(files, torch.tensor([0, 0, 1]), torch.tensor([0, 1, 1]))
    assert table == {
        "chilidog": {"images": 1, "correct": 1, "accuracy": 1.0},
        "food": {"images": 2, "correct": 1, "accuracy": 0.5},
    }
    assert (
        accuracy_per_category([Path("1051628.jpg"), *files], torch.zeros(4), torch.zeros(4)) is None
    )


def _evaluation_only_set(destination: Path, categories: dict[str, str] | None = None) -> Path:
    """Two photos per class in ROOT/test/<class>/ (no train/), optionally named by category."""
    copy_sample(destination, per_class=2, splits=("test",))
    if categories:
        for label, category in categories.items():
            for i, path in enumerate(sorted((destination / "test" / label).iterdir())):
                path.rename(path.with_name(f"{category} ({i + 1}).jpg"))
    return destination


class _FileAccessLog:
    """Every file opened or folder listed under ``roots``, tagged with whether fitting was on."""

    def __init__(self, roots: list[Path]) -> None:
        self.roots = [str(root.resolve()) for root in roots]
        self.fitting = False
        self.seen: list[tuple[bool, str]] = []

    def __call__(self, event: str, args: tuple) -> None:
        if event not in ("open", "os.listdir", "os.scandir") or not args:
            return
        target = args[0]
        if isinstance(target, (str, Path)):
            path = str(Path(target).resolve())
            if any(path.startswith(root) for root in self.roots):
                self.seen.append((self.fitting, path))


_ACCESS_LOGS: list[_FileAccessLog] = []


def _dispatch(event: str, args: tuple) -> None:
    for access_log in _ACCESS_LOGS:
        access_log(event, args)


sys.addaudithook(_dispatch)  # audit hooks cannot be removed; this one only feeds the active logs


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny model trained on 8 photos with two extra sets configured, every file access to
    those sets recorded and tagged with whether fitting was on."""
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONFIGS

    base = tmp_path_factory.mktemp("tiny")
    data = copy_sample(base / "data")
    stock = _evaluation_only_set(base / "stock")
    ood = _evaluation_only_set(base / "ood", {"hot_dog": "chilidog", "not_hot_dog": "pets"})
    access = _FileAccessLog([stock, ood])
    fit = L.Trainer.fit

    def watched_fit(self, *args, **kwargs):
        access.fitting = True
        try:
            return fit(self, *args, **kwargs)
        finally:
            access.fitting = False

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                f"paths.output_dir={base / 'run'}",
                "logger=csv",
                f"data.root={data}",
                f"data.extra_eval_roots={{stock:'{stock}',ood:'{ood}'}}",
                "model=mobilenetv3_small_100",
                "model.pretrained=false",
                "model.image_size=96",
                "trainer.max_epochs=2",
                "model.freeze_backbone_epochs=1",
            ],
        )
    L.Trainer.fit = watched_fit  # type: ignore[method-assign]
    _ACCESS_LOGS.append(access)
    try:
        metrics, _ = train(cfg)
    finally:
        _ACCESS_LOGS.remove(access)
        L.Trainer.fit = fit  # type: ignore[method-assign]
    return {"run": base / "run", "metrics": metrics, "access": access}


def test_fitting_never_reads_the_development_sets(tiny_run: dict):
    access: _FileAccessLog = tiny_run["access"]
    # Fitting (training, validation, checkpoint selection) touched neither set; the report did,
    # so the log does see those files when they are read.
    assert not [path for fitting, path in access.seen if fitting]
    assert {Path(p).parent.name for _, p in access.seen} >= {"hot_dog", "not_hot_dog"}


def test_training_reports_extra_sets_side_by_side(tiny_run: dict):
    run = tiny_run["run"]
    summary = json.loads((run / "eval_summary.json").read_text())
    assert [row["set"] for row in summary] == ["test", "stock", "ood"]
    test_report = json.loads((run / "metrics.json").read_text())
    # The run's test metrics stay the test split's, not the last extra set's.
    assert tiny_run["metrics"]["test/acc"] == pytest.approx(test_report["accuracy"])
    assert summary[0]["images"] == 8
    assert summary[0]["accuracy"] == round(test_report["accuracy"], 4)
    for row in summary[1:]:
        report = json.loads((run / "extra" / row["set"] / "metrics.json").read_text())
        assert row["images"] == report["counts"]["images"] == 4
        assert row["correct_hot_dog"] == f"{report['per_class']['hot_dog']['correct']}/2"
        assert 0 <= row["ece"] <= 1
    ood_report = json.loads((run / "extra" / "ood" / "metrics.json").read_text())
    assert set(ood_report["per_category"]) == {"chilidog", "pets"}
    assert "per_category" not in test_report  # Kaggle photos are named by number
    assert "ood / pets" in (run / "eval_summary.md").read_text()


def test_extra_sets_are_off_by_default(compose_train):
    cfg = compose_train("data=hotdog")
    assert cfg.data.extra_eval_roots is None


def test_corruption_table_on_a_tiny_model(tmp_path: Path):
    from hotdog.data import HotdogDataModule

    torch.manual_seed(0)
    model = HotdogClassifier(
        backbone="mobilenetv3_small_100",
        class_names=["hot_dog", "not_hot_dog"],
        pretrained=False,
        image_size=64,
    )
    data = HotdogDataModule(
        copy_sample(tmp_path / "data", per_class=3, splits=("test",)),
        model.data_config,
        cache_dir=None,
    )
    rows = robustness_report(model, data, tmp_path / "out", images=4)
    assert len(rows) == 1 + 3 * len(CORRUPTIONS)
    assert rows[0]["corruption"] == "clean" and all(row["images"] == 4 for row in rows)
    assert {row["corruption"] for row in rows[1:]} == set(CORRUPTIONS)
    table = (tmp_path / "out" / "corruptions.md").read_text()
    assert all(f"| {name} |" in table for name in CORRUPTIONS)
    with Image.open(tmp_path / "out" / "corruptions.png") as picture:
        assert picture.size[0] > 300


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_each_corruption_changes_the_picture_more_with_severity(name: str):
    function, levels = CORRUPTIONS[name]
    torch.manual_seed(0)
    picture = (torch.rand(3, 1, 1) * 155 + 50) * torch.ones(3, 48, 64)
    picture[:, 10:30, 20:40] = 240  # an edge for blur, rotation and crop to move
    picture = picture.to(torch.uint8)
    changes = []
    for level in levels:
        out = function(picture, level)
        assert out.shape == picture.shape and out.dtype == torch.uint8
        changes.append((out.float() - picture.float()).abs().mean().item())
    assert 0 < changes[0] < changes[2], changes


def test_evaluate_on_evaluation_only_folder_with_corruptions(
    compose_train, tmp_path: Path, tiny_run: dict
):
    """The CLI path: an evaluation-only data root, an extra set, and corruptions=true."""
    from hotdog.evaluate import evaluate

    data = _evaluation_only_set(tmp_path / "dev")
    copy = tmp_path / "copy"
    shutil.copytree(data, copy)
    cfg = compose_train(
        f"ckpt_path={tiny_run['run'] / 'checkpoints' / 'best.ckpt'}",
        f"data.root={data}",
        f"data.extra_eval_roots={{again:'{copy}'}}",
        "corruptions=true",
        "corruption_images=2",
        config_name="eval",
    )
    report = evaluate(cfg)
    summary = json.loads((tmp_path / "run" / "eval_summary.json").read_text())
    # The same photos in both sets: the same figures.
    assert summary[0]["accuracy"] == summary[1]["accuracy"] == round(report["accuracy"], 4)
    with (tmp_path / "run" / "corruptions.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 1 + 3 * len(CORRUPTIONS) and all(row["images"] == "2" for row in rows)
