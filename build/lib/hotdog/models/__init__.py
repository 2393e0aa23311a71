"""Models: timm backbones (with offline pretrained weights) and the Lightning classifier."""

from hotdog.models.backbones import PretrainedWeightsUnavailableError, create_backbone
from hotdog.models.classifier import HotdogClassifier, load_classifier

__all__ = [
    "HotdogClassifier",
    "PretrainedWeightsUnavailableError",
    "create_backbone",
    "load_classifier",
]
