"""The argument types and output folders the command-line tools share (hotdog.core.cli)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from hotdog.core.cli import (
    is_url,
    local_only,
    non_negative_float,
    output_file,
    output_folder,
    positive_int,
    probability,
)
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


def test_non_negative_float_refuses_negatives_and_nan():
    assert non_negative_float("0") == 0.0 and non_negative_float("1.5") == 1.5
    for text, message in [
        ("-5", "must be 0 or more, not -5.0"),
        ("nan", "0 or more"),
        ("x", "a number"),
    ]:
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            non_negative_float(text)


def test_urls_are_refused_where_only_local_files_work(tmp_path: Path):
    assert local_only(tmp_path / "a.ckpt", "Checkpoint") == tmp_path / "a.ckpt"
    assert local_only(f"file://{tmp_path}/a.ckpt", "Checkpoint") == tmp_path / "a.ckpt"
    assert not is_url("C:/runs/best.ckpt") and not is_url("file:///x") and is_url("s3://b/x")
    # pathlib turns gs://b/x into gs:/b/x; both are recognised.
    for url in ("gs://bucket/best.ckpt", Path("gs://bucket/best.ckpt"), "https://host/x.ckpt"):
        with pytest.raises(HotdogError, match=r"is not on this machine; .* copy it here first"):
            local_only(url, "Checkpoint")
    with pytest.raises(HotdogError, match=r"gs://b/export is not a local folder; pass a folder"):
        output_folder("gs://b/export")
    with pytest.raises(HotdogError, match=r"gs://b/r.json is not a local file; pass a path"):
        output_file("gs://b/r.json", "--report")
    assert not (tmp_path / "gs:").exists()


def test_output_file_is_checked_before_the_work(tmp_path: Path):
    report = output_file(tmp_path / "new" / "report.json", "--report")
    assert report.parent.is_dir() and not report.exists()
    with pytest.raises(HotdogError, match=r"is a folder; pass a file path such as report.json"):
        output_file(tmp_path, "--report")


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
