"""The argument types and output folders the command-line tools share (hotdog.core.cli)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from hotdog.core.cli import output_folder, positive_int, probability
from hotdog.core.errors import HotdogError


def test_positive_int_and_probability_refuse_with_what_is_wrong():
    assert positive_int("3") == 3
    for text, message in [("0", "must be 1 or more, not 0"), ("x", "must be a whole number")]:
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            positive_int(text)
    assert probability("0.01") == 0.01
    for text, message in [
        ("1", "between 0 and 1, not 1.0"),
        ("-2", "between 0 and 1"),
        ("x", "a number"),
    ]:
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            probability(text)


def test_output_folder_is_created_or_refused_in_one_sentence(tmp_path: Path):
    assert output_folder(tmp_path / "a" / "b").is_dir()
    taken = tmp_path / "file"
    taken.write_text("")
    with pytest.raises(
        HotdogError, match=r"exists and is not a folder; pass another folder with --out"
    ):
        output_folder(taken)
    with pytest.raises(HotdogError, match=r"Cannot create the folder .* pass a writable folder"):
        output_folder(taken / "below")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--alpha", "2"], "argument --alpha: must be between 0 and 1, not 2.0"),
        (["--permutations", "0"], "argument --permutations: must be 1 or more, not 0"),
    ],
)
def test_the_drift_command_refuses_bad_options_in_one_sentence(
    args: list[str], message: str, tmp_path: Path
):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "hotdog.monitor",
            "drift",
            "--reference",
            "r.jsonl",
            "--current",
            "c.jsonl",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert message in done.stderr
