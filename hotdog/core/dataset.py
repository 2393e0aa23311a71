"""The dataset layout: ``ROOT/{train,test}/{class}/*.jpg``, one folder per class name.

Validation is a stratified, seeded share of ``train``; ``test`` is only used for the final
evaluation. Plain Python and NumPy: the DataModule, the ``prepare`` stage and export list
photos through here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hotdog.core.errors import HotdogError

SPLITS = ("train", "test")
LAYOUT_HINT = "expected ROOT/{train,test}/{class}/*.jpg"


class DatasetError(HotdogError, ValueError):
    """The data on disk cannot be used as it is; the message says what to change."""


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int


def list_split(root: Path, split: str, classes: Sequence[str]) -> list[Sample]:
    """All entries of ``root/split/<class>/``, or a :class:`DatasetError` naming the problem."""
    split_dir = root / split
    if not split_dir.is_dir():
        raise DatasetError(f"Data folder {split_dir} is missing; {LAYOUT_HINT} under {root}.")
    found = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = sorted(set(found) - set(classes))
    missing = [name for name in classes if name not in found]
    if missing or unknown:
        raise DatasetError(
            f"Class folders in {split_dir} are {found or 'none'} but the classes are "
            f"{list(classes)}: {LAYOUT_HINT}. Rename the folders or set data.classes."
        )
    samples: list[Sample] = []
    for label, name in enumerate(classes):
        entries = sorted(p for p in (split_dir / name).iterdir() if not p.name.startswith("."))
        if not entries:
            raise DatasetError(
                f"Class folder {split_dir / name} is empty; add images of '{name}' to it."
            )
        samples += [Sample(path, label) for path in entries]
    return samples


def stratified_split(
    labels: Sequence[int], val_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Indices of a seeded train/validation split that keeps each class's share."""
    rng = np.random.default_rng(seed)
    train_idx: list[int] = []
    val_idx: list[int] = []
    labels_array = np.asarray(labels)
    for label in np.unique(labels_array):
        members = np.flatnonzero(labels_array == label)
        members = members[rng.permutation(len(members))]
        n_val = round(len(members) * val_fraction)
        if val_fraction > 0 and len(members) > 1:
            n_val = min(max(n_val, 1), len(members) - 1)
        val_idx += members[:n_val].tolist()
        train_idx += members[n_val:].tolist()
    return sorted(train_idx), sorted(val_idx)
