"""The pipeline's prepare stage: validation, metadata removal, duplicates and leaks, manifest."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hotdog.core.dataset import DatasetError
from hotdog.pipeline.prepare import Item, _group_duplicates, prepare, strip_jpeg_metadata
from tests.conftest import copy_sample, run_cli

GPS_IFD = 0x8825


def _add_gps_and_orientation(path: Path, orientation: int = 1) -> None:
    """Re-save the photo at ``path`` with GPS tags and an EXIF orientation."""
    with Image.open(path) as image:
        image.load()
        exif = Image.Exif()
        exif[0x0112] = orientation
        exif.get_ifd(GPS_IFD).update({1: "N", 2: (47.0, 22.0, 0.0), 3: "E", 4: (8.0, 32.0, 0.0)})
        image.save(path, quality=90, exif=exif)


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    root = copy_sample(tmp_path / "raw", per_class=3)
    train_hot = sorted((root / "train" / "hot_dog").glob("*.jpg"))
    # A train photo that also sits in test (a leak), a copy within train, GPS tags, a rotation.
    shutil.copy(train_hot[0], root / "test" / "hot_dog" / "leaked.jpg")
    shutil.copy(train_hot[1], root / "train" / "hot_dog" / "copy.jpg")
    gps = sorted((root / "train" / "not_hot_dog").glob("*.jpg"))[0]
    _add_gps_and_orientation(gps.rename(gps.with_name("gps.jpg")))
    turned = sorted((root / "test" / "not_hot_dog").glob("*.jpg"))[0]
    _add_gps_and_orientation(turned.rename(turned.with_name("turned.jpg")), orientation=6)
    return root


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_prepare_removes_leaks_duplicates_and_metadata(raw: Path, tmp_path: Path):
    out = tmp_path / "prepared"
    report = prepare(raw, out)
    dropped = {Path(d["file"]).name: d["reason"] for d in report["dropped"]}
    train_hot = sorted((raw / "train" / "hot_dog").glob("*.jpg"))
    assert "train/test leak" in dropped[train_hot[0].name]  # removed from train, test kept
    assert (out / "test" / "hot_dog" / "leaked.jpg").is_file()
    assert "within its split" in dropped["copy.jpg"] or "within its split" in dropped.get(
        train_hot[1].name, ""
    )
    assert (out / "train" / "not_hot_dog" / "gps.jpg").is_file()

    for path in out.rglob("*.jpg"):
        with Image.open(path) as image:
            assert not image.getexif(), path
            assert not any(name == "APP1" for name, _ in image.applist), path
    with Image.open(raw / "test" / "not_hot_dog" / "turned.jpg") as original:
        width, height = original.size
    with Image.open(out / "test" / "not_hot_dog" / "turned.jpg") as upright:
        assert upright.size == (height, width)
    assert report["rotated"] == 1 and report["metadata_stripped"] == 2


def test_metadata_removal_is_lossless(raw: Path):
    source = raw / "train" / "not_hot_dog" / "gps.jpg"
    stripped = strip_jpeg_metadata(source.read_bytes())
    assert len(stripped) < source.stat().st_size
    target = source.with_name("stripped.jpg")
    target.write_bytes(stripped)
    assert np.array_equal(_pixels(source), _pixels(target))


def test_manifest_and_report_describe_the_output(raw: Path, tmp_path: Path):
    out = tmp_path / "prepared"
    report = prepare(raw, out)
    with (out / "manifest.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg"))
    assert sorted(row["file"] for row in rows) == files
    for row in rows:
        content = (out / row["file"]).read_bytes()
        assert hashlib.sha256(content).hexdigest() == row["sha256"]
        assert int(row["bytes"]) == len(content)
        assert row["file"].startswith(f"{row['split']}/{row['label']}/")
    assert report["images"] == len(rows)
    assert json.loads((out / "report.json").read_text()) == report
    assert report["counts"]["test"]["hot_dog"] == 4


def test_leak_policy_keep_keeps_both(raw: Path, tmp_path: Path):
    report = prepare(raw, tmp_path / "prepared", leaks="keep")
    assert not any("leak" in d["reason"] for d in report["dropped"])


def test_corrupt_raw_files_are_named_or_skipped(raw: Path, tmp_path: Path):
    (raw / "train" / "hot_dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    (raw / "test" / "not_hot_dog" / "readme.txt").write_text("hello")
    with pytest.raises(DatasetError) as caught:
        prepare(raw, tmp_path / "prepared")
    assert "broken.jpg" in str(caught.value) and "readme.txt" in str(caught.value)
    report = prepare(raw, tmp_path / "prepared", skip_corrupt=True)
    reasons = {Path(d["file"]).name: d["reason"] for d in report["dropped"]}
    assert "not an image" in reasons["broken.jpg"] and "not an image" in reasons["readme.txt"]


def test_cli_missing_raw_folder_is_one_sentence(tmp_path: Path):
    done = run_cli("-m", "hotdog.pipeline.prepare", str(tmp_path / "none"), str(tmp_path / "o"))
    assert done.returncode == 2
    assert "Raw data folder" in done.stderr and "Traceback" not in done.stderr


def _all_pairs_groups(items: list[Item], max_distance: int) -> list[list[str]]:
    """The grouping by definition: every pair compared (the stage's algorithm until it scaled)."""
    groups: list[set[int]] = [{i} for i in range(len(items))]
    for i, a in enumerate(items):
        for j in range(i + 1, len(items)):
            b = items[j]
            if a.sha256 == b.sha256 or (a.dhash ^ b.dhash).bit_count() <= max_distance:
                merged = next(g for g in groups if i in g) | next(g for g in groups if j in g)
                groups = [g for g in groups if i not in g and j not in g] + [merged]
    found = [sorted(g) for g in groups if len(g) > 1]
    return [[items[i].source.name for i in g] for g in sorted(found)]


def _items_with_near_duplicates(count: int, seed: int) -> list[Item]:
    """Random dHashes, some copied with a few bits flipped, some with the same content hash."""
    rng = np.random.default_rng(seed)
    hashes = [int(h) * 2 + 1 for h in rng.integers(0, 2**63, count, dtype=np.int64)]
    shas = [f"sha{i}" for i in range(count)]
    for i in range(0, count, 7):  # a near copy of an earlier photo: 0 to 6 bits flipped
        source = int(rng.integers(0, i + 1))
        flips = rng.choice(64, size=int(rng.integers(0, 7)), replace=False)
        hashes[i] = hashes[source] ^ sum(1 << int(bit) for bit in flips)
    for i in range(3, count, 11):  # the same bytes as another photo
        shas[i] = shas[int(rng.integers(0, count))]
    return [
        Item("train", "hot_dog", Path(f"{i}.jpg"), sha256=shas[i], dhash=hashes[i])
        for i in range(count)
    ]


@pytest.mark.parametrize("max_distance", [-1, 0, 1, 3, 6, 12, 64])
def test_indexed_grouping_equals_comparing_every_pair(max_distance: int):
    items = _items_with_near_duplicates(300, seed=max_distance + 2)
    found = [[item.source.name for item in g] for g in _group_duplicates(items, max_distance)]
    assert found == _all_pairs_groups(items, max_distance)
    assert found  # the data has duplicates at every distance
