"""Training data in PyTorch: the decoded-image cache, torch transforms and the DataModule.

The torch-free parts (decoding, NumPy preprocessing, the folder layout) are in
:mod:`hotdog.core`, which the inference service uses without importing PyTorch.
"""

from hotdog.data.datamodule import HotdogDataModule
from hotdog.data.transforms import preprocess

__all__ = ["HotdogDataModule", "preprocess"]
