"""Argument types and output folders shared by the command-line tools (no PyTorch needed).

Each refuses a bad value with one sentence: argparse prints an ``ArgumentTypeError``'s text as
``argument --NAME: TEXT``, and :class:`~hotdog.core.errors.HotdogError` is printed by
:func:`~hotdog.core.errors.exit_on_user_error`.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from hotdog.core.errors import HotdogError


def _parsed(text: str, kind: type[int] | type[float], what: str) -> int | float:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, not {text!r}") from None


def positive_int(text: str) -> int:
    """A whole number of 1 or more."""
    value = int(_parsed(text, int, "a whole number"))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def probability(text: str) -> float:
    """A number strictly between 0 and 1."""
    value = float(_parsed(text, float, "a number"))
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {value}")
    return value


def non_negative_float(text: str) -> float:
    """A number of 0 or more."""
    value = float(_parsed(text, float, "a number"))
    if not value >= 0.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


# A scheme such as gs:// or s3://; pathlib turns "gs://b/x" into "gs:/b/x", so one slash is enough.
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):/")


def is_url(path: str | Path) -> bool:
    """Whether ``path`` names a remote location (``gs://``, ``https://``, ...); ``file://`` and
    Windows drives (``C:/``) are local."""
    match = _URL.match(str(path))
    return match is not None and match.group(1).lower() != "file"


def local_only(path: str | Path, what: str) -> Path:
    """``path`` as a local path, or one sentence saying that this command reads local files only."""
    if is_url(path):
        raise HotdogError(
            f"{what} {path} is not on this machine; this command reads local files only, so copy "
            "it here first (gcloud storage cp) and pass the local path."
        )
    return Path(str(path).removeprefix("file://"))


def output_folder(path: str | Path, option: str = "--out") -> Path:
    """Create ``path`` (and its parents) for writing, or say in one sentence why it cannot be."""
    if is_url(path):
        raise HotdogError(
            f"{path} is not a local folder; pass a folder on this machine with {option} and copy "
            "the files to the bucket afterwards."
        )
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


def output_file(path: str | Path, option: str) -> Path:
    """``path`` checked for writing a file (its folder created), before any long work starts."""
    if is_url(path):
        raise HotdogError(
            f"{path} is not a local file; pass a path on this machine with {option} and copy the "
            "file to the bucket afterwards."
        )
    file = Path(path)
    if file.is_dir():
        raise HotdogError(
            f"{file} is a folder; pass a file path such as report.json with {option}."
        )
    output_folder(file.parent, option)
    return file
