"""Accuracy under common photo corruptions: ``python -m hotdog.evaluate ... corruptions=true``.

Each corruption is applied at three severities to the decoded, resized picture (what the cache
holds) before the usual evaluation crop, so it stands for a worse photo of the same scene. The
result is a table (``corruptions.csv``, ``corruptions.md``) and a plot (``corruptions.png``) with
the clean accuracy as reference.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from hotdog.core.dataset import stratified_split
from hotdog.data.datamodule import HotdogDataModule, PictureDataset

log = logging.getLogger(__name__)

TABLE_FILE = "corruptions"

Corruption = Callable[[torch.Tensor, float], torch.Tensor]


def _brightness(picture: torch.Tensor, factor: float) -> torch.Tensor:
    return F.adjust_brightness(picture, factor)


def _contrast(picture: torch.Tensor, factor: float) -> torch.Tensor:
    return F.adjust_contrast(picture, factor)


def _blur(picture: torch.Tensor, sigma: float) -> torch.Tensor:
    kernel = 2 * int(np.ceil(3 * sigma)) + 1
    return F.gaussian_blur(picture, [kernel, kernel], [sigma, sigma])


def _noise(picture: torch.Tensor, std: float) -> torch.Tensor:
    # Seeded by the picture's content, so a table is reproducible and photos get different noise.
    generator = torch.Generator().manual_seed(int(picture[:, ::17, ::17].sum()))
    noisy = picture.float() / 255 + std * torch.randn(picture.shape, generator=generator)
    return (noisy.clamp(0, 1) * 255).round().to(torch.uint8)


def _jpeg(picture: torch.Tensor, quality: float) -> torch.Tensor:
    buffer = io.BytesIO()
    Image.fromarray(picture.permute(1, 2, 0).numpy()).save(buffer, "JPEG", quality=int(quality))
    with Image.open(buffer) as image:
        return F.pil_to_tensor(image.convert("RGB"))


def _rotation(picture: torch.Tensor, degrees: float) -> torch.Tensor:
    return F.rotate(picture, degrees, interpolation=InterpolationMode.BILINEAR)


def _crop(picture: torch.Tensor, keep: float) -> torch.Tensor:
    """Zoom in: keep the central ``keep`` share of each side, resized back to the full picture."""
    height, width = picture.shape[-2:]
    cropped = F.center_crop(picture, [round(height * keep), round(width * keep)])
    return F.resize(cropped, [height, width], antialias=True)


# name -> (function, its parameter at severities 1, 2, 3). Darker and flatter photos, defocus,
# sensor noise, heavy compression, a tilted phone and a subject partly out of frame.
CORRUPTIONS: dict[str, tuple[Corruption, tuple[float, float, float]]] = {
    "brightness": (_brightness, (0.6, 0.4, 0.25)),
    "contrast": (_contrast, (0.6, 0.4, 0.2)),
    "blur": (_blur, (1.0, 2.5, 5.0)),
    "noise": (_noise, (0.04, 0.08, 0.16)),
    "jpeg": (_jpeg, (30, 12, 5)),
    "rotation": (_rotation, (15, 30, 45)),
    "crop": (_crop, (0.8, 0.6, 0.4)),
}


class CorruptedDataset(PictureDataset):
    """``dataset``'s pictures with one corruption applied before its evaluation transform."""

    def __init__(self, dataset: PictureDataset, corruption: Corruption, level: float) -> None:
        super().__init__(dataset.pictures, dataset.labels, dataset.transform)
        self.corruption = corruption
        self.level = level

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        picture = self.corruption(self.pictures[index], self.level)
        return self.transform(picture), self.labels[index], index


def robustness_rows(
    model: Any, dataset: PictureDataset, batch_size: int = 64, bf16: bool = False
) -> list[dict[str, Any]]:
    """Accuracy on the clean pictures and under every corruption and severity."""
    from hotdog.evaluate import predict_probabilities

    labels = torch.tensor(dataset.labels)

    def row(name: str, severity: int, level: float | None, data: PictureDataset) -> dict[str, Any]:
        predictions = predict_probabilities(model, data, batch_size, bf16).argmax(-1)
        correct = int((predictions == labels).sum())
        result = {
            "corruption": name,
            "severity": severity,
            "level": level,
            "images": len(labels),
            "correct": correct,
            "accuracy": round(correct / len(labels), 4),
        }
        log.info("%s", result)
        return result

    rows = [row("clean", 0, None, dataset)]
    for name, (corruption, levels) in CORRUPTIONS.items():
        for severity, level in enumerate(levels, start=1):
            rows.append(row(name, severity, level, CorruptedDataset(dataset, corruption, level)))
    return rows


def write_table(rows: list[dict[str, Any]], output_dir: Path) -> None:
    """``corruptions.csv``, ``corruptions.md`` (one line per corruption) and ``corruptions.png``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    with (output_dir / f"{TABLE_FILE}.csv").open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    clean = rows[0]
    lines = [
        f"Clean: {clean['accuracy']:.1%} ({clean['correct']}/{clean['images']}).",
        "",
        "| corruption | severity 1 | severity 2 | severity 3 |",
        "|---|---|---|---|",
    ]
    for name in CORRUPTIONS:
        cells = [f"{r['accuracy']:.1%} ({r['level']:g})" for r in rows if r["corruption"] == name]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    (output_dir / f"{TABLE_FILE}.md").write_text("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4), dpi=120)
    for name in CORRUPTIONS:
        accuracy = [clean["accuracy"]] + [r["accuracy"] for r in rows if r["corruption"] == name]
        axes.plot(range(4), accuracy, marker="o", label=name)
    axes.set_xticks(range(4), ["clean", "1", "2", "3"])
    axes.set_xlabel("severity")
    axes.set_ylabel("accuracy")
    axes.set_title("Accuracy under corruptions")
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(output_dir / f"{TABLE_FILE}.png")
    plt.close(figure)


def robustness_report(
    model: Any,
    datamodule: HotdogDataModule,
    output_dir: Path,
    images: int | None = None,
    precision: str = "32-true",
) -> list[dict[str, Any]]:
    """The robustness table of ``datamodule``'s test split (a stratified subset of ``images``)."""
    dataset = datamodule.test_set
    if dataset is None:
        datamodule.setup("test")
        dataset = datamodule.test_set
    assert dataset is not None
    if images and images < len(dataset):
        share = 1 - images / len(dataset)
        keep, _ = stratified_split(dataset.labels, share, seed=0)
        pictures = [dataset.pictures[i] for i in keep]
        dataset = PictureDataset(pictures, [dataset.labels[i] for i in keep], dataset.transform)
    rows = robustness_rows(model, dataset, datamodule.eval_batch_size, "bf16" in precision)
    write_table(rows, output_dir)
    return rows
