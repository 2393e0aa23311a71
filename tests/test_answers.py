"""The "unsure" answers: the threshold fitted on the validation split, carried by the checkpoint,
given by hotdog.predict and counted by hotdog.evaluate (the service and the page: test_serve,
test_web_page)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from hotdog.core.answers import answer, unsure_threshold
from hotdog.core.artifact import CHECKPOINT_KEY, InferenceInfo
from hotdog.evaluate import evaluate, predict_probabilities
from hotdog.models import load_classifier
from hotdog.predict import predict_files
from hotdog.report import unsure_figures
from tests.conftest import SAMPLE


def test_threshold_leaves_the_share_of_least_sure_photos_below_it():
    confidences = [0.99, 0.51, 0.97, 0.62, 0.88, 0.93, 0.75, 0.96, 0.99, 0.58]
    threshold = unsure_threshold(confidences, 0.2)
    assert threshold == 0.62  # 0.51 and 0.58 fall below it, two of ten
    assert sum(c < threshold for c in confidences) == 2
    assert unsure_threshold(confidences, 0.35) == 0.75  # three of ten: int(3.5)
    assert unsure_threshold(confidences, 0.0) == 0.0  # off: never unsure
    assert unsure_threshold(confidences, 0.05) == 0.0  # less than one photo
    assert unsure_threshold([], 0.1) == 0.0
    assert unsure_threshold([i / 100 for i in range(100)], 0.29) == 0.29  # not 0.28: 29 below
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="unsure_share"):
            unsure_threshold(confidences, bad)


def test_answer_keeps_the_best_guess_and_flags_it_unsure():
    names = ["hot_dog", "not_hot_dog"]
    unsure = answer([0.6, 0.4], names, unsure_below=0.7)
    assert unsure == {
        "label": "hot_dog",
        "probability": 0.6,
        "probabilities": {"hot_dog": 0.6, "not_hot_dog": 0.4},
        "unsure": True,
    }
    assert answer([0.2, 0.8], names, unsure_below=0.7)["unsure"] is False
    assert answer([0.7, 0.3], names, unsure_below=0.7)["unsure"] is False  # at it: sure
    assert answer([0.5, 0.5], names)["unsure"] is False  # no threshold: never unsure


def test_models_from_before_the_threshold_are_never_unsure():
    info = InferenceInfo.from_dict(
        {
            "class_names": ["hot_dog", "not_hot_dog"],
            "backbone": "tf_efficientnet_lite0",
            "data_config": {
                "input_size": 224,
                "interpolation": "bicubic",
                "mean": [0.5] * 3,
                "std": [0.5] * 3,
                "crop_pct": 0.875,
            },
            "tta_hflip": False,
        }
    )
    assert info.unsure_below == 0.0
    assert InferenceInfo.from_dict(info.to_dict() | {"unsure_below": 0.7}).unsure_below == 0.7


def test_checkpoint_carries_the_threshold_of_its_own_validation_pass(trained_run: Path):
    checkpoint = trained_run / "checkpoints" / "best.ckpt"
    saved = torch.load(checkpoint, weights_only=False)[CHECKPOINT_KEY]["unsure_below"]
    model = load_classifier(checkpoint)
    assert model.unsure_below == saved
    # The run's own validation split, predicted again by the saved weights at the run's
    # precision: the threshold leaves two of its eight photos (the tiny run's share, 0.25) below
    # it, as training fitted it.
    cfg = OmegaConf.load(trained_run / "config.yaml")
    data = instantiate(cfg.data, data_config=model.data_config.to_dict())
    data.setup("fit")
    bf16 = "bf16" in str(cfg.trainer.precision)
    confidences = predict_probabilities(model, data.val_set, 8, bf16).max(-1).values
    assert len(confidences) == 8
    assert saved == pytest.approx(unsure_threshold(confidences.tolist(), 0.25), abs=1e-3)
    assert 0.5 < saved <= 1.0
    assert int((confidences < saved - 1e-3).sum()) <= 2 <= int((confidences < saved + 1e-3).sum())


def test_predict_flags_answers_below_the_threshold(trained_run: Path):
    model = load_classifier(trained_run / "checkpoints" / "best.ckpt")
    photos = sorted((SAMPLE / "test").rglob("*.jpg"))
    probabilities = sorted(r["probability"] for r in predict_files(model, photos))
    model.unsure_below = probabilities[10]  # the ten least sure photos fall below it
    results = predict_files(model, photos)
    unsure = [r for r in results if r["unsure"]]
    assert len(unsure) == 10 and max(r["probability"] for r in unsure) < model.unsure_below
    assert all(r["label"] in model.class_names for r in unsure)  # the best guess is still given
    model.unsure_below = 1.0  # nothing is that sure
    assert all(r["unsure"] for r in predict_files(model, photos[:3]))


def test_unsure_figures_count_what_users_see():
    probabilities = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.45, 0.55], [0.2, 0.8]])
    labels = torch.tensor([0, 1, 1, 0, 0])  # wrong: the second (unsure), the fourth, the fifth
    figures = unsure_figures(probabilities, labels, unsure_below=0.65)
    assert figures == {
        "unsure_below": 0.65,
        "unsure_answers": 2,
        "unsure_fraction": pytest.approx(0.4),
        "wrong": 3,
        "wrong_when_sure": 1,
        "accuracy_when_sure": pytest.approx(2 / 3),
    }


def test_evaluate_reports_unsure_answers(compose_train, trained_run: Path, tmp_path: Path):
    checkpoint = trained_run / "checkpoints" / "best.ckpt"
    report = evaluate(compose_train(f"ckpt_path={checkpoint}", config_name="eval"))
    figures = report["unsure"]
    assert figures["unsure_below"] == load_classifier(checkpoint).unsure_below
    with (tmp_path / "run" / "predictions.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    confidences = [max(float(r["p_hot_dog"]), float(r["p_not_hot_dog"])) for r in rows]
    wrong = [r["actual"] != r["predicted"] for r in rows]
    # The CSV rounds to 4 decimals: count within that rounding.
    threshold = figures["unsure_below"]
    below, near = (sum(c < threshold + d for c in confidences) for d in (-1e-4, 1e-4))
    assert below <= figures["unsure_answers"] <= near
    sure_wrong = [
        sum(w and c >= threshold + d for w, c in zip(wrong, confidences, strict=True))
        for d in (1e-4, -1e-4)
    ]
    assert sure_wrong[0] <= figures["wrong_when_sure"] <= sure_wrong[1]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["unsure"]["wrong"] == metrics["counts"]["misclassified"]
