"""Command-line overrides whose value has the wrong type or range, caught before anything runs.

Hydra takes ``optimizer.lr=abc`` as the string ``"abc"``, and the run then fails deep inside
PyTorch with a traceback. Here each ``key=value`` override is compared with the value the same
configuration holds without it: a string where that default is a number or a boolean is refused
in one sentence. Numbers outside the range of the common settings (``optimizer.lr=-1``,
``data.batch_size=0``) are refused the same way, before the model and data are built, instead
of failing later inside PyTorch or Lightning (or, for some, running on quietly). Needs Hydra and
OmegaConf (the ``train`` or ``gcp`` extra), not PyTorch.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hotdog.core.errors import HotdogError, exit_on_user_error, first_line

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


class OverrideTypeError(HotdogError):
    """An override's value is not of the type or in the range its setting takes."""


def _positive(value: float) -> bool:
    return value > 0


def _at_least_0(value: float) -> bool:
    return value >= 0


def _at_least_1(value: float) -> bool:
    return value >= 1


# Setting: (test, what the setting takes). Only numbers are tested; a wrong type is caught first.
RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "optimizer.lr": (_positive, "a positive number"),
    "optimizer.weight_decay": (_at_least_0, "0 or more"),
    "data.batch_size": (_at_least_1, "1 or more"),
    "data.eval_batch_size": (_at_least_1, "1 or more"),
    "data.num_workers": (_at_least_0, "0 or more"),
    "data.val_fraction": (lambda value: 0 <= value < 1, "0 or more and below 1"),
    "trainer.max_epochs": (lambda value: value >= 1 or value == -1, "1 or more (-1: no limit)"),
    "corruption_images": (_at_least_1, "1 or more"),
}


def _key(override: str) -> str | None:
    """The dotted key an ``key=value`` override sets; None for deletions and Hydra's own keys."""
    if override.startswith("~") or "=" not in override:
        return None
    key = override.split("=", 1)[0].lstrip("+")
    return None if key.startswith("hydra.") or "@" in key else key


def _is_group_choice(key: str) -> bool:
    return "." not in key and (CONFIG_DIR / key).is_dir()


def check_override_types(config_name: str, overrides: Sequence[str], cfg: Any) -> None:
    """Raise :class:`OverrideTypeError` for the first override in ``overrides`` that puts a
    string where ``config_name`` (composed with the same config-group choices) has a number or
    a boolean. Call it where Hydra's compose API is initialised (inside ``hydra.main`` too)."""
    from hydra import compose
    from omegaconf import OmegaConf

    values = [(o, k) for o in overrides if (k := _key(o)) and not _is_group_choice(k)]
    if not values:
        return
    choices = [o for o in overrides if (k := _key(o)) and _is_group_choice(k)]
    defaults = compose(config_name, overrides=choices)
    in_a_sweep = _in_a_sweep()
    for override, key in values:
        default = OmegaConf.select(defaults, key, default=None, throw_on_missing=False)
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        if not in_a_sweep:
            _check_range(override, key, value)
        if not isinstance(value, str) or not isinstance(default, bool | int | float):
            continue
        kind = (
            "true or false"
            if isinstance(default, bool)
            else "a whole number"
            if isinstance(default, int)
            else "a number"
        )
        raise OverrideTypeError(
            f"In {override}, {key} must be {kind} (its default is {default}); fix the value "
            "and run again."
        )


def _in_a_sweep() -> bool:
    """Whether this is a trial of a Hydra sweep: there a value out of range fails the trial,
    which the sweeper records and goes on, instead of stopping the whole sweep."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _check_range(override: str, key: str, value: Any) -> None:
    if key not in RANGES or isinstance(value, bool) or not isinstance(value, int | float):
        return
    test, takes = RANGES[key]
    if not test(value):  # nan fails every test
        raise OverrideTypeError(
            f"In {override}, {key} must be {takes}; fix the value and run again."
        )


def hydra_error_sentence(error: Exception) -> str:
    """One sentence, with what to do, for the composition errors a user's typo causes (an
    unknown config option or key); the first line of Hydra's text for any other."""
    text = str(error)
    missing = re.search(r"Could not find '(.+)/([^/']+)'", text)
    options = getattr(error, "options", None)
    if missing and options:
        group, option = missing.groups()
        return f"{group}={option} is not an option of {group}; use one of {', '.join(options)}."
    unknown = re.match(r"Could not override '([^']+)'", text)
    if unknown:
        key = unknown.group(1)
        return f"{key} is not a setting; check its spelling, or add a new one with +{key}=VALUE."
    return first_line(error).rstrip(".") + "."


def refuse_bad_command_line(config_name: str, argv: Sequence[str] | None = None) -> None:
    """Before ``hydra.main`` runs: compose ``config_name`` with the command line's overrides and
    stop with one sentence if it names a config option or key that does not exist (a typo), in
    place of Hydra's multi-line report. Anything else is left to Hydra: its own flags (``-m``,
    ``--cfg``, ...), and sweep syntax (``model=a,b``, ``choice(...)``) that a single composition
    cannot take but a sweep (``-m`` or ``hparams_search=optuna``) can."""
    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException, MissingConfigException

    overrides = list(sys.argv[1:] if argv is None else argv)
    if any(argument.startswith("-") for argument in overrides):
        return
    with exit_on_user_error(), initialize_config_module("hotdog.configs", version_base="1.3"):
        try:
            compose(config_name, overrides=overrides)
        except HydraException as error:
            if isinstance(error, MissingConfigException) or "Could not override" in str(error):
                raise OverrideTypeError(hydra_error_sentence(error)) from None
