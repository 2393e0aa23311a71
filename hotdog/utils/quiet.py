"""Keep a run's console output the project's own: drop third-party lines that tell a user nothing.

Each filter names the exact message, so anything else those libraries say still shows.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

# Lightning logs its tips through this module's logger (lightning_utilities' rank_zero_info).
_LIGHTNING_RANK_ZERO_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
)


class _DropMessages(logging.Filter):
    def __init__(self, *fragments: str) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


# Adverts for Lightning's hosted logger and model registry, and a note on how it counts steps for
# the schedule.
_LIGHTNING_NOISE = _DropMessages("litlogger", "litmodels", "to estimate number of stepping batches")


def quiet_third_parties() -> None:
    """Silence the third-party lines every training run used to print (idempotent)."""
    for name in _LIGHTNING_RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if _LIGHTNING_NOISE not in logger.filters:
            logger.addFilter(_LIGHTNING_NOISE)
    # Lightning's own pytree helper still builds a LeafSpec, which PyTorch deprecates: not our
    # code, and nothing a user can change.
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
    )
    # gcsfs announces its experimental features at INFO when it is imported (W&B, DVC import it),
    # and Hydra's job logging shows INFO.
    logging.getLogger("gcsfs").setLevel(logging.WARNING)


def without_anonymous_setting(wandb_init: dict[str, Any]) -> dict[str, Any]:
    """Lightning's WandbLogger always passes ``anonymous`` to ``wandb.init``, which W&B answers
    with a deprecation warning on every run; the setting has no effect, so leave it out."""
    return {key: value for key, value in wandb_init.items() if key != "anonymous"}
