"""Preprocessing, derived from the model's own data config and stored in every checkpoint.

Images are decoded once and resized so their short side is ``resize_size`` (aspect ratio kept);
that uint8 picture is what the cache stores. Evaluation then takes the central
``input_size`` square (no stretching: aspect ratio is correlated with the class in the Kaggle
data); training takes random crops, flips and colour changes from the same picture.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image
from torch import nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import functional as F

from hotdog.core.preprocessing import DataConfig, resize_short_side_image

__all__ = [
    "Augmentation",
    "DataConfig",
    "ScenePaste",
    "eval_transform",
    "preprocess",
    "train_transform",
]


@dataclass(frozen=True)
class Augmentation:
    """Training augmentation; the defaults suit fine-tuning on a few hundred photos."""

    scale: tuple[float, float] = (0.5, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: bool = True
    color_jitter: float = 0.2
    # TrivialAugment: one random photometric or geometric operation of random strength per image.
    trivial_augment: bool = False
    # Probability of erasing a random rectangle (set to the mean colour) after normalisation.
    random_erasing: float = 0.0
    # Probability of shrinking a crop to 35-80 % of its side and enlarging it back: the blur of
    # a small photo (a phone thumbnail, a stock picture 224 px wide) that evaluation upsamples.
    low_resolution: float = 0.0
    # Probability of shrinking a training crop to 30-60 % of its side and pasting it at a random
    # place in a crop of a random background-class photo; the label stays the pasted photo's.
    # It shows the model a hot dog small in a busy scene, which the Kaggle photos rarely do.
    scene_paste: float = 0.0


class RandomLowResolution(nn.Module):
    """With probability ``p``, resample a uint8 CHW picture down by a random factor and back."""

    def __init__(self, p: float, scale: tuple[float, float] = (0.35, 0.8)) -> None:
        super().__init__()
        self.p, self.scale = p, scale

    def forward(self, picture: torch.Tensor) -> torch.Tensor:
        if torch.rand(()) >= self.p:
            return picture
        height, width = picture.shape[-2:]
        factor = float(torch.empty(()).uniform_(*self.scale))
        small = [max(8, round(height * factor)), max(8, round(width * factor))]
        shrunk = F.resize(picture, small, interpolation=InterpolationMode.BILINEAR, antialias=True)
        return F.resize(shrunk, [height, width], interpolation=InterpolationMode.BILINEAR)


class ScenePaste:
    """Paste a shrunken training crop into a crop of another photo (``scene_paste`` above).

    Both crops are the output of the training transform (normalised, ``train_size`` square).
    Backgrounds come from the background class only ("not hot dog"), and photos of that class
    are pasted too, so a pasted rectangle is no cue to the label; the label is always the
    pasted photo's, since what a background-class photo shows is absence.
    """

    def __init__(self, p: float, scale: tuple[float, float] = (0.3, 0.6)) -> None:
        self.p, self.scale = p, scale

    def __call__(self, foreground: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
        height, width = background.shape[-2:]
        factor = float(torch.empty(()).uniform_(*self.scale))
        small_h, small_w = max(8, round(height * factor)), max(8, round(width * factor))
        small = F.resize(foreground, [small_h, small_w], antialias=True)
        top = int(torch.randint(0, height - small_h + 1, ()))
        left = int(torch.randint(0, width - small_w + 1, ()))
        scene = background.clone()
        scene[..., top : top + small_h, left : left + small_w] = small
        return scene


def resize_short_side(image: Image.Image, data_config: DataConfig) -> torch.Tensor:
    """Resize so the short side is ``resize_size`` and return a uint8 CHW tensor."""
    return F.pil_to_tensor(resize_short_side_image(image, data_config))


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
    if augmentation.trivial_augment:
        steps.append(T.TrivialAugmentWide(interpolation=InterpolationMode.BILINEAR))
    if augmentation.low_resolution:
        steps.append(RandomLowResolution(augmentation.low_resolution))
    if augmentation.color_jitter:
        strength = augmentation.color_jitter
        steps.append(T.ColorJitter(brightness=strength, contrast=strength, saturation=strength))
    steps += [
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(mean=list(data_config.mean), std=list(data_config.std)),
    ]
    if augmentation.random_erasing:
        steps.append(T.RandomErasing(p=augmentation.random_erasing, value=0.0))
    return T.Compose(steps)


def preprocess(image: Image.Image, data_config: DataConfig) -> torch.Tensor:
    """The whole evaluation pipeline for one decoded image: a normalised CHW float tensor."""
    return eval_transform(data_config)(resize_short_side(image, data_config))
