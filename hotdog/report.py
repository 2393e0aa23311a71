"""Test reports: metrics.json, a confusion-matrix picture and the misclassified files.

One function computes every figure from class probabilities, so ``hotdog.train`` and
``hotdog.evaluate`` write the same report for the same predictions.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torchmetrics.functional.classification import (
    binary_precision_recall_curve,
    binary_roc,
    multiclass_accuracy,
    multiclass_auroc,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)

from hotdog.core.answers import is_unsure

METRICS_FILE = "metrics.json"
CONFUSION_FILE = "confusion_matrix.png"
MISCLASSIFIED_FILE = "misclassified.csv"
PREDICTIONS_FILE = "predictions.csv"  # every image: DVC's confusion-matrix plot reads it
ROC_FILE = "roc.csv"
PR_FILE = "precision_recall.csv"
CALIBRATION_BINS = 15
# "chilidog (12).jpg": the development set drawn from ImageNet names each photo after its category.
CATEGORY_NAME = re.compile(r"^(?P<category>[A-Za-z][A-Za-z_-]*?) ?\(\d+\)$")


def expected_calibration_error(
    probabilities: torch.Tensor, labels: torch.Tensor, bins: int = CALIBRATION_BINS
) -> float:
    """Top-label ECE: the mean gap between confidence and accuracy over equal-width bins,
    weighted by how many images fall in each bin (0 is perfectly calibrated)."""
    confidence, predictions = probabilities.max(dim=-1)
    correct = (predictions == labels).float()
    # Confidences lie in [1/n, 1]; bin edges (a, b] with the first bin closed at 0.
    which = torch.clamp(torch.ceil(confidence * bins).long() - 1, 0, bins - 1)
    gap = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            share = members.float().mean()
            gap += (share * (confidence[members].mean() - correct[members].mean()).abs()).item()
    return gap


def accuracy_per_category(
    files: Sequence[Path], predictions: torch.Tensor, labels: torch.Tensor
) -> dict[str, dict[str, Any]] | None:
    """Accuracy per source category when every file name carries one (``food (3).jpg``);
    None otherwise (the Kaggle photos are named by number only)."""
    matches = [CATEGORY_NAME.match(Path(path).stem) for path in files]
    if not files or not all(matches):
        return None
    table: dict[str, dict[str, Any]] = {}
    for match, predicted, label in zip(matches, predictions.tolist(), labels.tolist(), strict=True):
        row = table.setdefault(match["category"].lower(), {"images": 0, "correct": 0})  # type: ignore[index]
        row["images"] += 1
        row["correct"] += int(predicted == label)
    for row in table.values():
        row["accuracy"] = row["correct"] / row["images"]
    return dict(sorted(table.items()))


def unsure_figures(
    probabilities: torch.Tensor, labels: torch.Tensor, unsure_below: float
) -> dict[str, Any]:
    """What users see with "unsure" answers (hotdog.core.answers): how many answers are unsure,
    and how many wrong answers are still given with confidence."""
    confidence, predictions = probabilities.max(dim=-1)
    sure = ~is_unsure(confidence, unsure_below)
    wrong = predictions != labels
    answered = int(sure.sum())
    return {
        "unsure_below": unsure_below,
        "unsure_answers": int((~sure).sum()),
        "unsure_fraction": float((~sure).float().mean()) if len(labels) else 0.0,
        "wrong": int(wrong.sum()),
        "wrong_when_sure": int((wrong & sure).sum()),
        "accuracy_when_sure": float((~wrong[sure]).float().mean()) if answered else None,
    }


def build_report(
    probabilities: torch.Tensor,
    labels: torch.Tensor,
    class_names: Sequence[str],
    unsure_below: float = 0.0,
) -> dict[str, Any]:
    """Accuracy, macro F1, AUROC, calibration error, per-class precision/recall, counts, and the
    "unsure" answers at the model's threshold."""
    n = len(class_names)
    predictions = probabilities.argmax(dim=-1)
    precision = multiclass_precision(predictions, labels, num_classes=n, average=None)
    recall = multiclass_recall(predictions, labels, num_classes=n, average=None)
    confusion = multiclass_confusion_matrix(predictions, labels, num_classes=n)
    return {
        "accuracy": multiclass_accuracy(predictions, labels, num_classes=n, average="micro").item(),
        "f1": multiclass_f1_score(predictions, labels, num_classes=n, average="macro").item(),
        "auroc": multiclass_auroc(probabilities, labels, num_classes=n).item(),
        "ece": expected_calibration_error(probabilities, labels),
        "per_class": {
            name: {
                "precision": precision[i].item(),
                "recall": recall[i].item(),
                "support": int((labels == i).sum()),
                "correct": int(((predictions == i) & (labels == i)).sum()),
            }
            for i, name in enumerate(class_names)
        },
        "counts": {
            "images": len(labels),
            "correct": int((predictions == labels).sum()),
            "misclassified": int((predictions != labels).sum()),
        },
        "confusion_matrix": {"rows_true_cols_predicted": confusion.tolist()},
        "class_names": list(class_names),
        "unsure": unsure_figures(probabilities, labels, unsure_below),
    }


def plot_confusion_matrix(matrix: list[list[int]], class_names: Sequence[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(4.2, 3.6), dpi=120)
    axes.imshow(matrix, cmap="Blues")
    peak = max(max(row) for row in matrix) or 1
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            colour = "white" if count > peak / 2 else "black"
            axes.text(j, i, str(count), ha="center", va="center", color=colour, fontsize=12)
    axes.set_xticks(range(len(class_names)), class_names)
    axes.set_yticks(range(len(class_names)), class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title("Confusion matrix")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _write_curves(output_dir: Path, probabilities: torch.Tensor, labels: torch.Tensor) -> None:
    """ROC and precision-recall curves of the first class (``hot_dog``) against the rest."""
    score, positive = probabilities[:, 0], (labels == 0).long()
    fpr, tpr, thresholds = binary_roc(score, positive)
    with (output_dir / ROC_FILE).open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["fpr", "tpr", "threshold"])
        writer.writerows(zip(fpr.tolist(), tpr.tolist(), thresholds.tolist(), strict=True))
    precision, recall, _ = binary_precision_recall_curve(score, positive)
    with (output_dir / PR_FILE).open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["recall", "precision"])
        writer.writerows(zip(recall.tolist(), precision.tolist(), strict=True))


def write_report(
    output_dir: Path,
    probabilities: torch.Tensor,
    labels: torch.Tensor,
    files: Sequence[Path],
    class_names: Sequence[str],
    extra: dict[str, Any] | None = None,
    unsure_below: float = 0.0,
) -> dict[str, Any]:
    """Write metrics.json, the confusion matrix PNG, per-image predictions, misclassified files
    and ROC / precision-recall curves; return the report."""
    output_dir.mkdir(parents=True, exist_ok=True)
    report = build_report(probabilities, labels, class_names, unsure_below)
    per_category = accuracy_per_category(files, probabilities.argmax(dim=-1), labels)
    if per_category is not None:
        report["per_category"] = per_category
    report |= extra or {}
    (output_dir / METRICS_FILE).write_text(json.dumps(report, indent=2) + "\n")
    plot_confusion_matrix(
        report["confusion_matrix"]["rows_true_cols_predicted"],
        class_names,
        output_dir / CONFUSION_FILE,
    )
    predictions = probabilities.argmax(dim=-1)
    _write_curves(output_dir, probabilities, labels)
    with (output_dir / PREDICTIONS_FILE).open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["file", "actual", "predicted", *(f"p_{name}" for name in class_names)])
        for i, path in enumerate(files):
            writer.writerow(
                [
                    str(path),
                    class_names[int(labels[i])],
                    class_names[int(predictions[i])],
                    *(f"{p:.4f}" for p in probabilities[i].tolist()),
                ]
            )
    with (output_dir / MISCLASSIFIED_FILE).open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["file", "true", "predicted", *(f"p_{name}" for name in class_names)])
        for i in torch.nonzero(predictions != labels).flatten().tolist():
            writer.writerow(
                [
                    str(files[i]),
                    class_names[int(labels[i])],
                    class_names[int(predictions[i])],
                    *(f"{p:.4f}" for p in probabilities[i].tolist()),
                ]
            )
    return report
