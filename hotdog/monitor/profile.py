"""One prediction as a record: the same fields in the service's log and the reference profile.

A record is a flat JSON object: when and by which model, the answer, the image's size and a few
cheap statistics of the pixels the model saw, and the model's reduced embedding. The reference
profile (written by ``hotdog.export``) is a file of such records for photos the model did not fit,
so the drift report compares like with like.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from hotdog.core.cli import is_url
from hotdog.core.preprocessing import DataConfig

# The per-image statistics the drift report tests one by one.
IMAGE_STATISTICS = ("brightness", "contrast", "saturation", "sharpness")
REFERENCE_SUFFIX = ".reference.jsonl"
# The image statistics look at every STATISTICS_STRIDE-th pixel of every STATISTICS_STRIDE-th row.
STATISTICS_STRIDE = 4
# Floats in a record keep this many decimals: enough for every test, a third of the bytes.
DECIMALS = 5

T = TypeVar("T")


def reference_uri(model_uri: str) -> str:
    """Where a model's reference profile lives: next to it (``model.int8.onnx.reference.jsonl``)."""
    return model_uri + REFERENCE_SUFFIX


def thumbnail(array: np.ndarray) -> np.ndarray:
    """The pixels the image statistics look at: every STATISTICS_STRIDE-th pixel of every
    STATISTICS_STRIDE-th row of a preprocessed image (3, H, W), copied (56 x 56 of a 224 px crop,
    37 KB, a few microseconds). The service takes it on the request path and leaves the
    statistics to the prediction log's writer thread, which computes them for a batch at once."""
    return np.ascontiguousarray(array[:, ::STATISTICS_STRIDE, ::STATISTICS_STRIDE])


def thumbnail_statistics(thumbnails: np.ndarray, data_config: DataConfig) -> list[dict[str, float]]:
    """Brightness, contrast, saturation and sharpness of each thumbnail of a batch (N, 3, h, w):
    the luma's mean and standard deviation, the HSV saturation, and the variance of the luma's
    Laplacian (which falls when a photo is blurred or heavily compressed), on the crop the model
    saw with its normalisation undone."""
    mean = np.asarray(data_config.mean, dtype=np.float32)[None, :, None, None]
    std = np.asarray(data_config.std, dtype=np.float32)[None, :, None, None]
    rgb = np.clip(thumbnails * std + mean, 0.0, 1.0)
    luma = 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]
    high, low = rgb.max(axis=1), rgb.min(axis=1)
    saturation = (high - low) / np.maximum(high, 1e-6)
    laplacian = (
        luma[:, :-2, 1:-1]
        + luma[:, 2:, 1:-1]
        + luma[:, 1:-1, :-2]
        + luma[:, 1:-1, 2:]
        - 4 * luma[:, 1:-1, 1:-1]
    )
    columns = {
        "brightness": luma.mean(axis=(1, 2)),
        "contrast": luma.std(axis=(1, 2)),
        "saturation": saturation.mean(axis=(1, 2)),
        "sharpness": laplacian.var(axis=(1, 2)),
    }
    return [
        {name: float(values[row]) for name, values in columns.items()}
        for row in range(len(thumbnails))
    ]


def image_statistics(array: np.ndarray, data_config: DataConfig) -> dict[str, float]:
    """:func:`thumbnail_statistics` of one preprocessed image (3, H, W): the reference profile's
    statistics, by the same code as the service's log."""
    return thumbnail_statistics(thumbnail(array)[None], data_config)[0]


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
    source: str = ""  # where they were read from, for messages


def _is_record(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("probabilities"), dict)
        and isinstance(value.get("model_version"), str)
    )


def _lines(paths: Iterable[str | Path]) -> Iterator[str]:
    for path in paths:
        with _open_binary(path) as file:
            for raw in file:
                yield raw.decode("utf-8", errors="replace")


def _open_binary(path: str | Path) -> Any:
    if isinstance(path, Path):
        return path.open("rb")
    import fsspec  # a gs:// object (the service's log on Cloud Run)

    return fsspec.open(path, "rb")


def record_files(location: str | Path) -> list[str | Path]:
    """The ``*.jsonl`` files of a folder (recursively), or the file itself. A ``gs://`` prefix
    (where the service writes its log on Cloud Run) is listed like a folder, through fsspec."""
    if is_url(location):
        import fsspec

        fs, root = fsspec.core.url_to_fs(str(location))
        if fs.isdir(root):
            found = (path for path in fs.find(root) if path.endswith(".jsonl"))
            return sorted(fs.unstrip_protocol(path) for path in found)
        return [str(location)]
    location = Path(location)
    if location.is_dir():
        return sorted(location.rglob("*.jsonl"))
    return [location]


def read_records(location: str | Path) -> RecordSet:
    """Every readable record under ``location`` (a local path or a ``gs://`` URI); corrupt or
    truncated lines are counted."""
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
    return RecordSet(records, skipped, len(files), str(location))


def matching_features(records: Sequence[dict[str, Any]]) -> np.ndarray:
    """What makes two records alike for :func:`split_reference_half`: the embedding (scaled to
    unit spread per number on average) and the image statistics (each standardised)."""
    embeddings = np.array([record["embedding"] for record in records], dtype=np.float64)
    statistics = np.array(
        [[record[name] for name in IMAGE_STATISTICS] for record in records], dtype=np.float64
    )
    spread = statistics.std(0)
    return np.concatenate(
        [
            embeddings / max(float(embeddings.std(0).mean()), 1e-12),
            (statistics - statistics.mean(0)) / np.where(spread > 0, spread, 1.0),
        ],
        axis=1,
    )


def _nearest_pairs(features: np.ndarray) -> tuple[list[tuple[int, int]], list[int]]:
    """Greedy matching: the closest two unpaired items, again and again; and what is left over."""
    squared = (features**2).sum(1)
    distances = squared[:, None] + squared[None, :] - 2 * features @ features.T
    rows, columns = np.triu_indices(len(features), k=1)
    free = set(range(len(features)))
    pairs = []
    for index in np.argsort(distances[rows, columns], kind="stable"):
        first, second = int(rows[index]), int(columns[index])
        if first in free and second in free:
            pairs.append((first, second))
            free -= {first, second}
            if len(free) < 2:
                break
    return pairs, sorted(free)


def split_reference_half(
    items: Sequence[T], labels: Sequence[int], seed: int, features: np.ndarray
) -> tuple[list[T], list[T]]:
    """Half of each class for the reference profile, and the other half held out.

    A matched-pair split: within each class the photos are paired with their nearest neighbour
    (``features``, one row per item: :func:`matching_features`) and a seeded coin sends one of
    each pair to the reference, the other to the held-out half (an odd one out is held out). Both
    halves then cover the same kinds of photo. A plain random half of a few hundred photos can,
    by the luck of its draw, differ from the rest more than the drift tests tolerate (measured:
    the random half the export first used differed from its other half at MMD p = 0.007), and
    every window of real traffic would then look a little drifted against it.

    The held-out half is the "no drift" stream of the detection benchmark: photos from the same
    source that the reference did not contain.
    """
    rng = np.random.default_rng(seed)
    reference: list[T] = []
    held_out: list[T] = []
    for label in sorted(set(labels)):
        members = [index for index, own in enumerate(labels) if own == label]
        pairs, left_over = _nearest_pairs(features[members])
        for pair in pairs:
            first, second = pair if rng.random() < 0.5 else pair[::-1]
            reference.append(items[members[first]])
            held_out.append(items[members[second]])
        held_out += [items[members[index]] for index in left_over]
    return reference, held_out
