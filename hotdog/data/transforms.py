"""Preprocessing, derived from the model's own data config and stored in every checkpoint.

Images are decoded once and resized so their short side is ``resize_size`` (aspect ratio kept);
that uint8 picture is what the cache stores. Evaluation then takes the central
``input_size`` square (no stretching: aspect ratio is correlated with the class in the Kaggle
data); training takes random crops, flips and colour changes from the same picture.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from PIL import Image
from torch import nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import functional as F


@dataclass(frozen=True)
class DataConfig:
    """What a model expects of its input; timm's ``resolve_data_config`` in a typed form.

    ``input_size`` is the evaluation and serving size. ``train_input_size`` (default: the same)
    is the size of training crops: random crops magnify objects, so a model trained on crops
    sees them at their training size when evaluated at a larger size (FixRes; Touvron et al.).
    """

    input_size: int = 224
    train_input_size: int | None = None
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    crop_pct: float = 0.875

    @property
    def train_size(self) -> int:
        return self.train_input_size or self.input_size

    @property
    def resize_size(self) -> int:
        """Short side of the picture the centre crop is taken from (timm's rule)."""
        return math.floor(self.input_size / self.crop_pct)

    @classmethod
    def from_timm(cls, config: dict[str, Any], train_input_size: int | None = None) -> DataConfig:
        return cls(
            input_size=int(config["input_size"][-1]),
            train_input_size=train_input_size,
            interpolation=str(config.get("interpolation", "bicubic")),
            mean=tuple(float(v) for v in config["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in config["std"]),  # type: ignore[arg-type]
            crop_pct=float(config.get("crop_pct", 0.875)),
        )

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> DataConfig:
        train_input_size = config.get("train_input_size")
        return cls(
            input_size=int(config["input_size"]),
            train_input_size=int(train_input_size) if train_input_size else None,
            interpolation=str(config["interpolation"]),
            mean=tuple(config["mean"]),  # type: ignore[arg-type]
            std=tuple(config["std"]),  # type: ignore[arg-type]
            crop_pct=float(config["crop_pct"]),
        )

    def to_dict(self) -> dict[str, Any]:
        config = asdict(self)
        config["mean"], config["std"] = list(self.mean), list(self.std)
        return config


@dataclass(frozen=True)
class Augmentation:
    """Training augmentation; the defaults suit fine-tuning on a few hundred photos."""

    scale: tuple[float, float] = (0.5, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: bool = True
    color_jitter: float = 0.2


def resize_short_side(image: Image.Image, data_config: DataConfig) -> torch.Tensor:
    """Resize so the short side is ``resize_size`` and return a uint8 CHW tensor."""
    width, height = image.size
    scale = data_config.resize_size / min(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resample = {
        "bicubic": Image.Resampling.BICUBIC,
        "bilinear": Image.Resampling.BILINEAR,
        "nearest": Image.Resampling.NEAREST,
    }[data_config.interpolation]
    resized = image.resize(size, resample=resample, reducing_gap=None)
    return F.pil_to_tensor(resized)


def eval_transform(data_config: DataConfig) -> nn.Module:
    """Central ``input_size`` crop of a resized picture, normalised; deterministic."""
    return T.Compose(
        [
            T.CenterCrop(data_config.input_size),
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(mean=list(data_config.mean), std=list(data_config.std)),
        ]
    )


def train_transform(data_config: DataConfig, augmentation: Augmentation) -> nn.Module:
    """Random crop (scale and aspect), flip and colour jitter of a resized picture, normalised."""
    steps: list[nn.Module] = [
        T.RandomResizedCrop(
            data_config.train_size,
            scale=augmentation.scale,
            ratio=augmentation.ratio,
            interpolation=InterpolationMode.BILINEAR,
            antialias=True,
        )
    ]
    if augmentation.hflip:
        steps.append(T.RandomHorizontalFlip())
    if augmentation.color_jitter:
        strength = augmentation.color_jitter
        steps.append(T.ColorJitter(brightness=strength, contrast=strength, saturation=strength))
    steps += [
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(mean=list(data_config.mean), std=list(data_config.std)),
    ]
    return T.Compose(steps)


def preprocess(image: Image.Image, data_config: DataConfig) -> torch.Tensor:
    """The whole evaluation pipeline for one decoded image: a normalised CHW float tensor."""
    return eval_transform(data_config)(resize_short_side(image, data_config))
