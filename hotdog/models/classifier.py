"""``HotdogClassifier``: a timm backbone with a fresh head, trained with Lightning.

Fine-tuning recipe choices (see the README's results):
- the new head starts at zero, so the first logits are 0 instead of +-15;
- the backbone can stay frozen for the first epochs (a linear probe, then fine-tuning: the
  features are not wrecked by gradients from a random head), and it learns at a lower rate;
- BatchNorm layers of the backbone stay in eval mode: batches of 32 from 400 photos give worse
  statistics than ImageNet's, and the head would learn on features it never sees at test time.
"""

from __future__ import annotations

import functools
import logging
import math
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import lightning as L
import timm
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MaxMetric, MeanMetric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassF1Score,
)

from hotdog.core.answers import check_unsure_share, unsure_threshold
from hotdog.core.artifact import CHECKPOINT_KEY, VALIDATION_FILES_KEY, InferenceInfo
from hotdog.core.cli import local_only
from hotdog.core.errors import HotdogError, first_line
from hotdog.core.preprocessing import DataConfig
from hotdog.models.backbones import create_backbone, timm_parts

log = logging.getLogger(__name__)


def _stage_metrics(num_classes: int, prefix: str) -> MetricCollection:
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes=num_classes, average="micro"),
            "f1": MulticlassF1Score(num_classes=num_classes, average="macro"),
            "auroc": MulticlassAUROC(num_classes=num_classes),
        },
        prefix=prefix,
    )


class HotdogClassifier(L.LightningModule):
    def __init__(
        self,
        backbone: str = "tf_efficientnet_lite0",
        class_names: Sequence[str] = ("hot_dog", "not_hot_dog"),
        pretrained: bool = True,
        weights: str | None = None,
        image_size: int | None = None,
        train_image_size: int | None = None,
        drop_rate: float = 0.2,
        head_init: str = "zero",
        label_smoothing: float = 0.0,
        backbone_lr_scale: float = 0.1,
        freeze_backbone_epochs: int = 0,
        freeze_batchnorm: bool = True,
        tta_hflip: bool = False,
        channels_last: bool = True,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        l2sp: float = 0.0,
        unsure_share: float = 0.05,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
    ) -> None:
        super().__init__()
        # The optimizer and scheduler are factories from the config: they are logged with the
        # config, and a checkpoint must load without them.
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.class_names = list(class_names)
        self.label_smoothing = label_smoothing
        self.backbone_lr_scale = backbone_lr_scale
        self.freeze_backbone_epochs = freeze_backbone_epochs
        self.freeze_batchnorm = freeze_batchnorm
        self.tta_hflip = tta_hflip
        self.channels_last = channels_last
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.mixing = _batch_mixing(len(class_names), mixup_alpha, cutmix_alpha)
        self.l2sp = l2sp
        # The "unsure" threshold: refitted on every validation pass, so each checkpoint carries
        # the one of the weights it holds (hotdog.core.answers).
        check_unsure_share(unsure_share)  # a bad share fails here, not after an epoch
        self.unsure_share = unsure_share
        self.unsure_below = 0.0
        self._said_split_too_small = False
        # The validation photos it was fitted on (relative to the data root), from a loaded
        # checkpoint: export refits the threshold on them for each served model.
        self.validation_files: list[str] = []
        self._val_batches: list[tuple[torch.Tensor, torch.Tensor]] = []  # (indices, confidence)

        self.net = create_backbone(
            backbone,
            num_classes=len(self.class_names),
            pretrained=pretrained,
            weights=weights,
            drop_rate=drop_rate,
        )
        head = timm_parts(self.net).get_classifier()
        if head_init == "zero" and isinstance(head, nn.Linear):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        # L2-SP: the backbone is pulled towards its pretrained weights (not towards zero). The
        # starting point is taken in setup("fit"), before a resumed run restores its checkpoint,
        # and kept in memory only, never in checkpoints.
        self._start_point: list[tuple[nn.Parameter, torch.Tensor]] = []  # (parameter, start)

        overrides = {"input_size": (3, image_size, image_size)} if image_size else {}
        self.data_config = DataConfig.from_timm(
            timm.data.resolve_data_config(overrides, model=self.net), train_image_size
        )

        num_classes = len(self.class_names)
        self.train_metrics = MetricCollection(
            {"acc": MulticlassAccuracy(num_classes=num_classes, average="micro")},
            prefix="train/",
        )
        self.val_metrics = _stage_metrics(num_classes, "val/")
        self.test_metrics = _stage_metrics(num_classes, "test/")
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # saved in checkpoints, so a resume keeps it
        # Filled by the test loop: dataset indices and class probabilities, in index order.
        self.test_predictions: tuple[torch.Tensor, torch.Tensor] | None = None
        self._test_batches: list[tuple[torch.Tensor, torch.Tensor]] = []

    # ----------------------------------------------------------------- the network
    def head_parameters(self) -> list[nn.Parameter]:
        return list(timm_parts(self.net).get_classifier().parameters())

    def backbone_parameters(self) -> list[nn.Parameter]:
        head = {id(p) for p in self.head_parameters()}
        return [p for p in self.net.parameters() if id(p) not in head]

    @property
    def backbone_frozen(self) -> bool:
        return self.training and self.current_epoch < self.freeze_backbone_epochs

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for a normalised NCHW batch."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if self.backbone_frozen:
            with torch.no_grad():
                features = timm_parts(self.net).forward_features(images)
            return timm_parts(self.net).forward_head(features)
        logits = self.net(images)
        if self.tta_hflip and not self.training:
            logits = (logits + self.net(images.flip(-1))) / 2
        return logits

    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        return F.softmax(self(images), dim=-1)

    def train(self, mode: bool = True) -> HotdogClassifier:
        super().train(mode)
        if mode and self.backbone_frozen:
            self.net.eval()
            # timm's forward_head applies dropout with F.dropout(training=net.training): keep the
            # top-level flag on, so the head still has dropout while every layer below is frozen.
            self.net.training = True
        elif mode and self.freeze_batchnorm:
            for module in self.net.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    # ----------------------------------------------------------------- training loop
    def on_train_epoch_start(self) -> None:
        frozen = self.current_epoch < self.freeze_backbone_epochs
        for parameter in self.backbone_parameters():
            parameter.requires_grad_(not frozen)
        self.train(True)  # re-apply the eval/train split of modules for this epoch

    def _step(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images, labels = batch[0], batch[1]
        logits = self(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        return loss, logits, labels

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.mixing is not None:  # mixed images and soft targets
            batch = self.mixing(batch[0], batch[1])
        loss, logits, targets = self._step(batch)
        # Accuracy against each image's label, or its larger share when mixed.
        labels = targets.argmax(-1) if targets.ndim == 2 else targets
        if self._start_point and not self.backbone_frozen:
            drift = sum((p - p0).pow(2).sum() for p, p0 in self._start_point)
            loss = loss + self.l2sp / 2 * drift
        self.train_loss(loss)
        self.train_metrics.update(logits, labels)  # computed once per epoch, when logged
        self.log("train/loss", self.train_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.l2sp and not self._start_point:
            self._start_point = [(p, p.detach().clone()) for p in self.backbone_parameters()]

    def on_train_start(self) -> None:
        self._start_point = [(p, p0.to(self.device)) for p, p0 in self._start_point]
        if self.trainer.ckpt_path is None:  # a resumed run keeps its best so far
            self.val_acc_best.reset()

    def on_validation_epoch_start(self) -> None:
        self._val_batches = []

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        loss, logits, labels = self._step(batch)
        probabilities = logits.float().softmax(-1)
        self.val_loss(loss)
        self.val_metrics.update(probabilities, labels)
        self._val_batches.append((batch[2].detach(), probabilities.max(dim=-1).values.detach()))
        self.log("val/loss", self.val_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log_dict(self.val_metrics, on_step=False, on_epoch=True, prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        accuracy = self.val_metrics["acc"].compute()
        self.val_acc_best(accuracy)
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True)
        batches, self._val_batches = self._val_batches, []
        if self.trainer.sanity_checking or not batches:
            return  # a few batches before training: not the split the threshold is fitted on
        _, confidences = self._gather_unique(batches)  # every rank fits the same threshold
        self.unsure_below = unsure_threshold(confidences.tolist(), self.unsure_share)
        self.log("val/unsure_below", self.unsure_below)
        if self.unsure_share and not self.unsure_below and not self._said_split_too_small:
            self._said_split_too_small = True
            if self.global_rank == 0:
                log.info(
                    "%d validation photos are too few for model.unsure_share=%g (it needs %d), so "
                    "no answer will be marked unsure; raise data.val_fraction or unsure_share, or "
                    "set model.unsure_share=0 to turn unsure answers off.",
                    len(confidences),
                    self.unsure_share,
                    math.ceil(1 / self.unsure_share),
                )

    def test_step(self, batch: Any, batch_idx: int) -> None:
        loss, logits, labels = self._step(batch)
        probabilities = logits.float().softmax(-1)  # not bfloat16: AUROC needs the resolution
        self.test_loss(loss)
        self.test_metrics.update(probabilities, labels)
        self.log("test/loss", self.test_loss, on_step=False, on_epoch=True)
        self.log_dict(self.test_metrics, on_step=False, on_epoch=True)
        self._test_batches.append((batch[2].detach(), probabilities.detach()))

    def on_test_epoch_start(self) -> None:
        self._test_batches = []

    def on_test_epoch_end(self) -> None:
        indices, probabilities = self._gather_unique(self._test_batches)
        self.test_predictions = (indices, probabilities.float())
        self._test_batches = []

    def _gather_unique(
        self, batches: list[tuple[torch.Tensor, torch.Tensor]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(dataset indices, per-image values) of an evaluation pass, from every rank, each
        image once and in index order, on the CPU. DistributedSampler pads the ranks to equal
        length by repeating images: the repeats are dropped."""
        indices = torch.cat([i for i, _ in batches])
        values = torch.cat([v for _, v in batches])
        if self.trainer.world_size > 1:
            indices = cast(torch.Tensor, self.all_gather(indices)).reshape(-1)
            gathered = cast(torch.Tensor, self.all_gather(values))
            values = gathered.reshape(-1, *values.shape[1:])
        order = torch.argsort(indices)
        indices, values = indices[order], values[order]
        first = torch.ones_like(indices, dtype=torch.bool)
        first[1:] = indices[1:] != indices[:-1]
        return indices[first].cpu(), values[first].cpu()

    # ----------------------------------------------------------------- optimisation
    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise RuntimeError("HotdogClassifier needs an optimizer factory to be trained.")
        factory = self.optimizer_factory
        base_lr = (
            factory.keywords.get("lr", 1e-3) if isinstance(factory, functools.partial) else 1e-3
        )
        groups = [
            {"params": self.head_parameters(), "lr": base_lr, "name": "head"},
            {
                "params": self.backbone_parameters(),
                "lr": base_lr * self.backbone_lr_scale,
                "name": "backbone",
                # With L2-SP the backbone decays towards its pretrained weights, not towards zero.
                **({"weight_decay": 0.0} if self.l2sp else {}),
            },
        ]
        optimizer = factory(params=groups)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(
            optimizer=optimizer, total_steps=int(self.trainer.estimated_stepping_batches)
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # ----------------------------------------------------------------- checkpoints
    def inference_info(self) -> InferenceInfo:
        """What a checkpoint must say for inference: classes, model and preprocessing."""
        return InferenceInfo(
            class_names=tuple(self.class_names),
            backbone=timm_parts(self.net).pretrained_cfg["architecture"],
            data_config=self.data_config,
            tta_hflip=self.tta_hflip,
            unsure_below=self.unsure_below,
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = self.inference_info().to_dict()
        datamodule = getattr(self._trainer, "datamodule", None)
        files = _datamodule_validation_files(datamodule) or self.validation_files
        if files:
            checkpoint[VALIDATION_FILES_KEY] = files

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The preprocessing a model was trained with, not what today's timm would derive.
        if CHECKPOINT_KEY in checkpoint:
            info = InferenceInfo.from_dict(checkpoint[CHECKPOINT_KEY])
            self.data_config = info.data_config
            self.unsure_below = info.unsure_below
        self.validation_files = list(checkpoint.get(VALIDATION_FILES_KEY) or [])


def _datamodule_validation_files(datamodule: Any) -> list[str]:
    """The validation photos of a HotdogDataModule, relative to its root in POSIX form; empty for
    another datamodule or photos outside the root."""
    root, files = getattr(datamodule, "root", None), getattr(datamodule, "files", {}).get("val")
    if root is None or not files:
        return []
    try:
        return [Path(f).relative_to(root).as_posix() for f in files]
    except ValueError:
        return []


def _batch_mixing(
    num_classes: int, mixup_alpha: float, cutmix_alpha: float
) -> Callable[..., tuple[torch.Tensor, torch.Tensor]] | None:
    """MixUp and/or CutMix of a training batch (one of them, at random, per batch), or None."""
    from torchvision.transforms import v2

    choices: list[nn.Module] = []
    if mixup_alpha > 0:
        choices.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_classes))
    if cutmix_alpha > 0:
        choices.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
    if not choices:
        return None
    return choices[0] if len(choices) == 1 else v2.RandomChoice(choices)


def load_classifier(path: str | Path, map_location: str = "cpu") -> HotdogClassifier:
    """Load a checkpoint written by ``hotdog.train`` for inference; no Hydra config needed."""
    path = local_only(path, "Checkpoint")
    if path.is_dir():
        raise HotdogError(
            f"{path} is a folder; pass the checkpoint file in it (checkpoints/best.ckpt of a "
            "training run)."
        )
    if not path.is_file():
        raise HotdogError(
            f"Checkpoint {path} does not exist; pass the checkpoints/best.ckpt of a training run."
        )
    try:
        model = HotdogClassifier.load_from_checkpoint(
            path, map_location=map_location, pretrained=False, weights=None
        )
    except (
        KeyError,
        RuntimeError,
        TypeError,
        ValueError,
        EOFError,
        OSError,
        pickle.UnpicklingError,
    ) as error:
        raise HotdogError(
            f"{path} is not a hotdog checkpoint ({_short_reason(error)}); pass one written by "
            "hotdog.train."
        ) from error
    return model.eval()


def _short_reason(error: BaseException) -> str:
    """One line on why a file did not load: PyTorch's own texts run to several lines of advice
    meant for code that loads untrusted pickles, and a file that is not a pickle at all gives
    a bare ``KeyError`` of a byte value."""
    text = str(error).strip()
    unreadable = isinstance(error, pickle.UnpicklingError | EOFError) or (
        isinstance(error, KeyError) and not (error.args and isinstance(error.args[0], str))
    )
    if unreadable or "weights only load failed" in text.lower():
        return "it is empty, corrupt or not a PyTorch checkpoint"
    if "failed finding central directory" in text or "failed reading zip archive" in text:
        return "it is truncated or not a PyTorch checkpoint"
    first = first_line(error) or type(error).__name__
    return first if len(first) <= 120 else first[:117] + "..."
