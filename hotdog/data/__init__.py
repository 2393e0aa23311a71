"""Data: image decoding, preprocessing derived from the model, the cache and the DataModule."""

from hotdog.data.datamodule import DatasetError, HotdogDataModule
from hotdog.data.images import UnreadableImageError, decode_image, read_image
from hotdog.data.transforms import DataConfig, preprocess

__all__ = [
    "DataConfig",
    "DatasetError",
    "HotdogDataModule",
    "UnreadableImageError",
    "decode_image",
    "preprocess",
    "read_image",
]
