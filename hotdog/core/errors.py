"""The one base class for problems a user can fix; entry points print its message, no traceback."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

# What to check when a gs:// read fails (no such bucket, no credentials, no network).
GCS_READ_HINT = (
    "check the bucket name and that credentials are available (GOOGLE_APPLICATION_CREDENTIALS or "
    "the service account of the machine)"
)


def silence_gcsfs_failures() -> None:
    """gcsfs logs each failed request with its traceback; a command that turns those failures
    into one sentence of its own calls this before it reads or writes gs://."""
    logging.getLogger("gcsfs").setLevel(logging.CRITICAL)


class HotdogError(Exception):
    """Something the user can fix: a wrong path, a bad file, missing weights or credentials.

    The message is one sentence that names the problem and says what to do.
    """


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s text ("" when it has none): libraries' messages often run
    to several lines of detail that a one-sentence message cannot carry."""
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


def problem(error: HotdogError) -> str:
    """What went wrong, without the advice: the part of a one-sentence message before its ";".

    For a caller that knows better advice for its own context and wraps the message in its own.
    """
    return str(error).split("; ", 1)[0].rstrip(".")


def user_error_in(error: BaseException | None) -> HotdogError | None:
    """The :class:`HotdogError` behind ``error``, also when a wrapper (Hydra's instantiate)
    raised it from one."""
    while error is not None:
        if isinstance(error, HotdogError):
            return error
        error = error.__cause__
    return None


@contextmanager
def exit_on_user_error(exit_code: int = 2) -> Iterator[None]:
    """Turn a :class:`HotdogError` into its message on stderr and an exit status."""
    try:
        yield
    except Exception as error:
        cause = user_error_in(error)
        if cause is None:
            raise
        logging.getLogger("hotdog").debug("user error", exc_info=True)
        print(f"error: {cause}", file=sys.stderr)
        sys.exit(exit_code)
