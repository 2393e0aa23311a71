"""``HotdogDataModule``: train/validation/test loaders over cached pictures.

The folder layout and the stratified validation split are in :mod:`hotdog.core.dataset`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from hotdog.core.dataset import LAYOUT_HINT, DatasetError, list_split, stratified_split
from hotdog.data.cache import ImageCache
from hotdog.data.transforms import (
    Augmentation,
    DataConfig,
    ScenePaste,
    eval_transform,
    train_transform,
)

log = logging.getLogger(__name__)

# The class whose photos show the absence of the others: scene pasting puts photos of every
# class into photos of this one.
BACKGROUND_CLASS = "not_hot_dog"


class PictureDataset(Dataset):
    """Resized uint8 pictures in memory; items are ``(image, label, index)``.

    With ``paste`` and ``background_label``, a training item may be pasted into a transformed
    photo of that label (see :class:`~hotdog.data.transforms.ScenePaste`).
    """

    def __init__(
        self,
        pictures: Sequence[torch.Tensor],
        labels: Sequence[int],
        transform,
        paste: ScenePaste | None = None,
        background_label: int | None = None,
    ) -> None:
        self.pictures = list(pictures)
        self.labels = list(labels)
        self.transform = transform
        self.paste = paste
        self.backgrounds = [i for i, label in enumerate(self.labels) if label == background_label]

    def __len__(self) -> int:
        return len(self.pictures)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        image = self.transform(self.pictures[index])
        if self.paste and self.backgrounds and torch.rand(()) < self.paste.p:
            other = self.backgrounds[int(torch.randint(len(self.backgrounds), ()))]
            image = self.paste(image, self.transform(self.pictures[other]))
        return image, self.labels[index], index


class HotdogDataModule(L.LightningDataModule):
    """Train/val/test loaders over cached, resized pictures.

    ``data_config`` comes from the model (see ``HotdogClassifier.data_config``), so the
    preprocessing is never re-typed in the data config.
    """

    def __init__(
        self,
        root: str | Path,
        data_config: DataConfig | Mapping[str, Any],
        classes: Sequence[str] = ("hot_dog", "not_hot_dog"),
        val_fraction: float = 0.2,
        split_seed: int = 42,
        batch_size: int = 32,
        eval_batch_size: int = 64,
        num_workers: int = 0,
        cache_dir: str | Path | None = None,
        decode_threads: int = 2,
        skip_corrupt: bool = False,
        augmentation: Augmentation | Mapping[str, Any] | None = None,
        extra_eval_roots: Mapping[str, str | Path] | None = None,
    ) -> None:
        super().__init__()
        self.root = Path(root).expanduser()
        if not isinstance(data_config, DataConfig):
            data_config = DataConfig.from_dict(dict(data_config))
        self.data_config = data_config
        self.classes = list(classes)
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.decode_threads = decode_threads
        self.skip_corrupt = skip_corrupt
        if not isinstance(augmentation, Augmentation):
            options: dict[str, Any] = {
                key: tuple(value) if isinstance(value, Sequence) else value
                for key, value in (augmentation or {}).items()
            }
            augmentation = Augmentation(**options)
        self.augmentation = augmentation
        self.cache = ImageCache(cache_dir, self.data_config)
        # Evaluation-only sets ({name: ROOT with test/<class>/}), reported beside the test split
        # after training; this module never reads them, so fitting cannot peek at them.
        self.extra_eval_roots = {
            name: Path(root).expanduser() for name, root in (extra_eval_roots or {}).items()
        }
        self.files: dict[str, list[Path]] = {}
        self.skipped: list[tuple[Path, str]] = []
        self.train_set: PictureDataset | None = None
        self.val_set: PictureDataset | None = None
        self.test_set: PictureDataset | None = None

    def _load_split(self, split: str) -> tuple[list[Path], list[torch.Tensor], list[int]]:
        samples = list_split(self.root, split, self.classes)
        decoded = self.cache.load_many([s.path for s in samples], threads=self.decode_threads)
        bad = [(d.path, d.error or "") for d in decoded if d.pixels is None]
        if bad and not self.skip_corrupt:
            listing = "; ".join(f"{path} {reason}" for path, reason in bad)
            raise DatasetError(
                f"{len(bad)} file(s) under {self.root / split} cannot be used as images: "
                f"{listing}. Remove or replace them, or set data.skip_corrupt=true to skip them."
            )
        if bad:
            log.warning(
                "Skipping %d unreadable file(s) in %s: %s",
                len(bad),
                self.root / split,
                "; ".join(f"{path} {reason}" for path, reason in bad),
            )
            self.skipped += bad
        kept = [(s, d) for s, d in zip(samples, decoded, strict=True) if d.pixels is not None]
        if not kept:
            raise DatasetError(f"No usable images under {self.root / split}.")
        return (
            [s.path for s, _ in kept],
            [d.pixels for _, d in kept],  # type: ignore[misc]
            [s.label for s, _ in kept],
        )

    def setup(self, stage: str | None = None) -> None:
        if not self.root.is_dir():
            raise DatasetError(
                f"Data root {self.root} does not exist; point data.root at a folder laid out as "
                f"{LAYOUT_HINT}."
            )
        if stage in (None, "fit", "validate") and self.train_set is None:
            paths, pictures, labels = self._load_split("train")
            train_idx, val_idx = stratified_split(labels, self.val_fraction, self.split_seed)
            augment = train_transform(self.data_config, self.augmentation)
            plain = eval_transform(self.data_config)
            self.files["train"] = [paths[i] for i in train_idx]
            self.files["val"] = [paths[i] for i in val_idx]
            self.train_set = PictureDataset(
                [pictures[i] for i in train_idx],
                [labels[i] for i in train_idx],
                augment,
                paste=ScenePaste(self.augmentation.scene_paste)
                if self.augmentation.scene_paste
                else None,
                background_label=self.background_label,
            )
            self.val_set = PictureDataset(
                [pictures[i] for i in val_idx], [labels[i] for i in val_idx], plain
            )
        # The test split is read when fitting too, so a bad test file stops the run at the
        # start rather than after training.
        if stage in (None, "fit", "test") and self.test_set is None:
            paths, pictures, labels = self._load_split("test")
            self.files["test"] = paths
            self.test_set = PictureDataset(pictures, labels, eval_transform(self.data_config))

    @property
    def background_label(self) -> int | None:
        """The class that means "none of the others", if the classes have one."""
        return self.classes.index(BACKGROUND_CLASS) if BACKGROUND_CLASS in self.classes else None

    def for_root(self, root: Path) -> HotdogDataModule:
        """The same preprocessing and loading settings over another data root."""
        return HotdogDataModule(
            root,
            self.data_config,
            classes=self.classes,
            eval_batch_size=self.eval_batch_size,
            num_workers=self.num_workers,
            cache_dir=self.cache.directory,
            decode_threads=self.decode_threads,
            skip_corrupt=self.skip_corrupt,
        )

    def _loader(self, dataset: Dataset | None, batch_size: int, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError("Call setup() before asking for a data loader.")
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.eval_batch_size, shuffle=False)
