"""The one base class for problems a user can fix; entry points print its message, no traceback."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager


class HotdogError(Exception):
    """Something the user can fix: a wrong path, a bad file, missing weights or credentials.

    The message is one sentence that names the problem and says what to do.
    """


@contextmanager
def exit_on_user_error(exit_code: int = 2) -> Iterator[None]:
    """Turn a :class:`HotdogError` into its message on stderr and an exit status."""
    try:
        yield
    except HotdogError as error:
        logging.getLogger("hotdog").debug("user error", exc_info=True)
        print(f"error: {error}", file=sys.stderr)
        sys.exit(exit_code)
