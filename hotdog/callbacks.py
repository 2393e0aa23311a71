"""Lightning callbacks of this project."""

from __future__ import annotations

import time
from dataclasses import dataclass

import lightning as L


@dataclass
class EpochThroughput:
    epoch: int
    images: int
    seconds: float
    backbone_frozen: bool

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0


class ThroughputMonitor(L.Callback):
    """Training images per second of each epoch (data loading included, validation excluded).

    Logged as ``train/images_per_s``; the records and the wall-clock time of ``fit`` are kept
    for benchmarks.
    """

    def __init__(self) -> None:
        self.records: list[EpochThroughput] = []
        self.fit_seconds = 0.0
        self._fit_start = 0.0
        self._start = 0.0
        self._images = 0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_start = time.perf_counter()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.fit_seconds = time.perf_counter() - self._fit_start

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._images = 0
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._images += len(batch[0])

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seconds = time.perf_counter() - self._start
        frozen = bool(getattr(pl_module, "backbone_frozen", False))
        record = EpochThroughput(trainer.current_epoch, self._images, seconds, frozen)
        self.records.append(record)
        pl_module.log("train/images_per_s", record.images_per_s, on_epoch=True)
