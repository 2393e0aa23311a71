"""Build callbacks and loggers from config dicts of ``_target_`` nodes."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ProgressBar
from lightning.pytorch.loggers import Logger

from hotdog.utils.quiet import without_anonymous_setting


def _nodes(config: Mapping[str, Any] | None) -> list[Any]:
    return [node for node in (config or {}).values() if node and "_target_" in node]


def quiet_console() -> bool:
    """No progress bars in CI or when stderr is not a terminal's (a log file, a pipe)."""
    return bool(os.environ.get("CI")) or not sys.stderr.isatty()


def instantiate_callbacks(
    config: Mapping[str, Any] | None, with_logger: bool = True
) -> list[L.Callback]:
    """Callbacks of the config, less those that cannot work here (a learning-rate monitor
    without a logger, a progress bar in CI)."""
    callbacks = [instantiate(node) for node in _nodes(config)]
    if quiet_console():
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    if not with_logger:
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    return callbacks


def use_wandb_offline_without_key() -> None:
    """W&B logs offline (a local run folder to sync later) unless a key or mode is set."""
    if not os.environ.get("WANDB_API_KEY") and not os.environ.get("WANDB_MODE"):
        os.environ["WANDB_MODE"] = "offline"


def instantiate_loggers(config: Mapping[str, Any] | None) -> list[Logger]:
    nodes = _nodes(config)
    if any("wandb" in str(node["_target_"]).lower() for node in nodes):
        use_wandb_offline_without_key()
    loggers = [instantiate(node) for node in nodes]
    for logger in loggers:
        if hasattr(logger, "_wandb_init"):  # Lightning's WandbLogger keeps wandb.init's arguments
            logger._wandb_init = without_anonymous_setting(logger._wandb_init)
    return loggers
