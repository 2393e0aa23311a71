"""Data: image decoding, preprocessing derived from the model, the cache and the DataModule.

Names are imported lazily, so that the inference service can use ``hotdog.data.images`` and
``hotdog.data.preprocessing`` without importing PyTorch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hotdog.data.datamodule import DatasetError, HotdogDataModule
    from hotdog.data.images import UnreadableImageError, decode_image, read_image
    from hotdog.data.preprocessing import DataConfig, preprocess_array
    from hotdog.data.transforms import preprocess

_WHERE = {
    "DataConfig": "preprocessing",
    "preprocess_array": "preprocessing",
    "DatasetError": "datamodule",
    "HotdogDataModule": "datamodule",
    "UnreadableImageError": "images",
    "decode_image": "images",
    "read_image": "images",
    "preprocess": "transforms",
}

__all__ = [
    "DataConfig",
    "DatasetError",
    "HotdogDataModule",
    "UnreadableImageError",
    "decode_image",
    "preprocess",
    "preprocess_array",
    "read_image",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"hotdog.data.{_WHERE[name]}"), name)
