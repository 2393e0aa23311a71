"""One prediction as a record: the same fields in the service's log and the reference profile.

A record is a flat JSON object: when and by which model, the answer, the image's size and a few
cheap statistics of the pixels the model saw, and the model's reduced embedding. The reference
profile (written by ``hotdog.export``) is a file of such records for photos the model did not fit,
so the drift report compares like with like.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from hotdog.core.preprocessing import DataConfig

# The per-image statistics the drift report tests one by one.
IMAGE_STATISTICS = ("brightness", "contrast", "saturation", "sharpness")
REFERENCE_SUFFIX = ".reference.jsonl"
# Floats in a record keep this many decimals: enough for every test, a third of the bytes.
DECIMALS = 5

T = TypeVar("T")


def reference_uri(model_uri: str) -> str:
    """Where a model's reference profile lives: next to it (``model.int8.onnx.reference.jsonl``)."""
    return model_uri + REFERENCE_SUFFIX


def image_statistics(array: np.ndarray, data_config: DataConfig) -> dict[str, float]:
    """Brightness, contrast, saturation and sharpness of one preprocessed image (3, H, W).

    Computed on every second pixel of the crop the model saw (normalisation undone): a quarter of
    a millisecond whatever the upload's size, and the same function makes the reference.
    """
    mean = np.asarray(data_config.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(data_config.std, dtype=np.float32)[:, None, None]
    rgb = np.clip(array[:, ::2, ::2] * std + mean, 0.0, 1.0)
    luma = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    high, low = rgb.max(axis=0), rgb.min(axis=0)
    saturation = (high - low) / np.maximum(high, 1e-6)
    # Variance of the Laplacian: falls when a photo is blurred or heavily compressed.
    laplacian = (
        luma[:-2, 1:-1] + luma[2:, 1:-1] + luma[1:-1, :-2] + luma[1:-1, 2:] - 4 * luma[1:-1, 1:-1]
    )
    return {
        "brightness": float(luma.mean()),
        "contrast": float(luma.std()),
        "saturation": float(saturation.mean()),
        "sharpness": float(laplacian.var()),
    }


def prediction_record(
    *,
    model_version: str,
    class_names: Sequence[str],
    probabilities: Sequence[float],
    statistics: dict[str, float],
    embedding: Sequence[float] | None,
    width: int | None = None,
    height: int | None = None,
    image_format: str | None = None,
    latency_ms: float | None = None,
    time: datetime | None = None,
) -> dict[str, Any]:
    best = int(np.argmax(probabilities))
    return {
        "time": (time or datetime.now(UTC)).isoformat(timespec="milliseconds"),
        "model_version": model_version,
        "label": class_names[best],
        "probabilities": {
            name: round(float(value), DECIMALS)
            for name, value in zip(class_names, probabilities, strict=True)
        },
        "latency_ms": None if latency_ms is None else round(latency_ms, 3),
        "width": width,
        "height": height,
        "format": image_format,
        **{name: round(value, DECIMALS) for name, value in statistics.items()},
        "embedding": None if embedding is None else [round(float(x), DECIMALS) for x in embedding],
    }


def write_records(path: Path, records: Iterable[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as file:
        for record in records:
            file.write(json.dumps(record, separators=(",", ":")) + "\n")


@dataclass
class RecordSet:
    """Records read from JSON-lines files, and how many lines were skipped as unreadable."""

    records: list[dict[str, Any]]
    skipped: int
    files: int


def _is_record(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("probabilities"), dict)
        and isinstance(value.get("model_version"), str)
    )


def _lines(paths: Iterable[Path]) -> Iterator[str]:
    for path in paths:
        with path.open("rb") as file:
            for raw in file:
                yield raw.decode("utf-8", errors="replace")


def record_files(location: Path) -> list[Path]:
    """The ``*.jsonl`` files of a folder (recursively), or the file itself."""
    if location.is_dir():
        return sorted(location.rglob("*.jsonl"))
    return [location]


def read_records(location: Path) -> RecordSet:
    """Every readable record under ``location``; corrupt or truncated lines are counted."""
    files = record_files(location)
    records: list[dict[str, Any]] = []
    skipped = 0
    for line in _lines(files):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            skipped += 1
            continue
        if _is_record(value):
            records.append(value)
        else:
            skipped += 1
    return RecordSet(records, skipped, len(files))


def split_reference_half(
    items: Sequence[T], labels: Sequence[int], seed: int
) -> tuple[list[T], list[T]]:
    """A seeded half of each class for the reference profile, and the other half held out.

    The held-out half is the "no drift" stream of the detection benchmark: photos from the same
    source that the reference did not contain.
    """
    reference: list[T] = []
    held_out: list[T] = []
    for label in sorted(set(labels)):
        members = [item for item, own in zip(items, labels, strict=True) if own == label]
        random.Random(seed + label).shuffle(members)
        half = len(members) // 2
        reference += members[:half]
        held_out += members[half:]
    return reference, held_out
