"""``python -m hotdog.monitor drift --reference PROFILE --current LOGS [--out DIR]``.

Compares logged predictions (a JSON-lines file or a folder of them, e.g. one day of the service's
prediction log, local or under a ``gs://`` prefix) with the reference profile exported with the
model; writes ``drift.html`` and ``drift.json`` and exits 1 when the window drifted (so a
scheduled job can alert on it).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from hotdog.core.cli import is_url, output_folder, positive_int, probability
from hotdog.core.errors import (
    GCS_READ_HINT,
    HotdogError,
    exit_on_user_error,
    first_line,
    silence_gcsfs_failures,
)
from hotdog.monitor.drift import ALPHA, PERMUTATIONS, detect_drift
from hotdog.monitor.profile import RecordSet, read_records
from hotdog.monitor.report import render_html

_HINTS = {
    "Reference profile": "pass the <model>.reference.jsonl written next to the exported model.",
    "Prediction log": "pass a JSON-lines file or a folder of them (HOTDOG_PREDICTION_LOG).",
}


def _read(location: str, what: str) -> RecordSet:
    """The records at a local path or ``gs://`` URI, or one sentence saying why there are none."""
    try:
        return read_records(location)
    except FileNotFoundError:
        raise HotdogError(f"{what} {location} does not exist; {_HINTS[what]}") from None
    except ImportError as error:
        raise HotdogError(
            f"Reading {location} needs {error.name}; install 'hotdog[monitor]'."
        ) from None
    except Exception as error:  # gcsfs raises many types for auth and network failures
        if not is_url(location):
            raise
        raise HotdogError(
            f"{what} {location} cannot be read ({type(error).__name__}: {first_line(error)}); "
            f"{GCS_READ_HINT}."
        ) from None


def drift(args: argparse.Namespace) -> int:
    out = output_folder(args.out)  # before the reading and the tests, which may take a while
    reference = _read(args.reference, "Reference profile")
    current = _read(args.current, "Prediction log")
    result = detect_drift(reference, current, alpha=args.alpha, permutations=args.permutations)
    summary = result.summary()
    (out / "drift.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "drift.html").write_text(render_html(result, args.reference, args.current))
    skipped = f", {current.skipped} unreadable lines skipped" if current.skipped else ""
    print(
        f"{'DRIFT' if result.drift else 'no drift'}: score {result.score:.3g} (alpha "
        f"{result.alpha}) over {result.current_records} predictions{skipped}; "
        f"report in {out / 'drift.html'}"
    )
    for test in result.tests:
        flag = "  drift" if test.drift else ""
        print(
            f"  {test.name:28s} p={test.p_value:.3g} statistic={test.statistic:.3g} "
            f"floor={test.floor:.3g}{flag}"
        )
    return 1 if result.drift else 0


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m hotdog.monitor")
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("drift", help="compare logged predictions with the reference")
    command.add_argument(
        "--reference", required=True, help="the model's *.reference.jsonl (a path or gs:// URI)"
    )
    command.add_argument(
        "--current", required=True, help="a prediction log file or folder, or a gs:// prefix"
    )
    command.add_argument("--out", default="reports/drift", help="folder for drift.html/json")
    command.add_argument("--alpha", type=probability, default=ALPHA, help="false-alarm rate")
    command.add_argument("--permutations", type=positive_int, default=PERMUTATIONS)
    args = parser.parse_args(argv)
    silence_gcsfs_failures()  # _read says in one sentence why a gs:// log cannot be read
    with exit_on_user_error():
        sys.exit(drift(args))


if __name__ == "__main__":
    main()
