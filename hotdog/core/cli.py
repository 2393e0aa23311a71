"""Argument types and output folders shared by the command-line tools (no PyTorch needed).

Each refuses a bad value with one sentence: argparse prints an ``ArgumentTypeError``'s text as
``argument --NAME: TEXT``, and :class:`~hotdog.core.errors.HotdogError` is printed by
:func:`~hotdog.core.errors.exit_on_user_error`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hotdog.core.errors import HotdogError


def positive_int(text: str) -> int:
    """A whole number of 1 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def probability(text: str) -> float:
    """A number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, not {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {value}")
    return value


def output_folder(path: str | Path, option: str = "--out") -> Path:
    """Create ``path`` (and its parents) for writing, or say in one sentence why it cannot be."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise HotdogError(
            f"{folder} exists and is not a folder; pass another folder with {option}."
        ) from None
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise HotdogError(
            f"Cannot create the folder {folder} ({reason}); pass a writable folder with {option}."
        ) from None
    return folder
