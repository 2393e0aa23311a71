"""Prepare raw images for training: validate, strip metadata, find duplicates, remove leaks.

    python -m hotdog.pipeline.prepare RAW OUT [--leaks drop-from-train] [--skip-corrupt]

Reads ``RAW/{train,test}/{class}/*`` and writes the same layout to ``OUT`` with:
- every file decoded in full (corrupt, truncated and non-image files stop the stage with one
  message naming them all, or are skipped and listed with ``--skip-corrupt``);
- metadata removed (EXIF with GPS positions, XMP, IPTC, comments). JPEGs are rewritten without
  those segments, losslessly; a photo whose EXIF says it is rotated is re-encoded upright;
- exact duplicates (same pixels file-for-file) and near duplicates (same 64-bit difference hash)
  found across and within splits. A photo in both train and test is a leak, removed from one
  split according to ``--leaks``; duplicates within a split keep their first copy;
- ``OUT/manifest.csv`` (file, split, label, sha256, bytes, width, height) and a JSON data report
  listing every file that was dropped and why.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import itertools
import json
import shutil
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from hotdog.core.dataset import SPLITS, DatasetError, list_split
from hotdog.core.errors import exit_on_user_error
from hotdog.core.images import UnreadableImageError, decode_image

LEAK_POLICIES = ("drop-from-train", "drop-from-test", "keep")
# JPEG segments kept: JFIF header (APP0), colour profile (APP2 ICC_PROFILE), Adobe colour
# transform (APP14, needed to decode CMYK). Everything else before the scan data is metadata.
_KEPT_APP = {0xE0: b"JFIF", 0xE2: b"ICC_PROFILE", 0xEE: b"Adobe"}
_ORIENTATION_TAG = 0x0112


@dataclass
class Item:
    split: str
    label: str
    source: Path
    content: bytes = b""
    sha256: str = ""
    dhash: int = 0
    width: int = 0
    height: int = 0
    dropped: str | None = None


@dataclass
class Report:
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    unreadable: list[dict[str, str]] = field(default_factory=list)
    dropped: list[dict[str, str]] = field(default_factory=list)
    duplicate_groups: list[list[str]] = field(default_factory=list)
    rotated: int = 0
    metadata_stripped: int = 0

    def as_dict(self) -> dict[str, Any]:
        total = sum(sum(c.values()) for c in self.counts.values())
        return {
            "images": total,
            "counts": self.counts,
            "unreadable": self.unreadable,
            "dropped": self.dropped,
            "duplicate_groups": self.duplicate_groups,
            "rotated": self.rotated,
            "metadata_stripped": self.metadata_stripped,
        }


def strip_jpeg_metadata(data: bytes) -> bytes:
    """The JPEG ``data`` without metadata segments; the compressed image is copied unchanged."""
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG")
    out = bytearray(b"\xff\xd8")
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            raise ValueError("malformed JPEG segment")
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        segment = data[position : position + 2 + length]
        if marker == 0xDA:  # start of scan: the rest is image data
            out += data[position:]
            return bytes(out)
        is_app = 0xE0 <= marker <= 0xEF
        keep = not is_app and marker != 0xFE
        if is_app and marker in _KEPT_APP:
            keep = segment[4:].startswith(_KEPT_APP[marker])
        if keep:
            out += segment
        position += 2 + length
    raise ValueError("JPEG without image data")


def difference_hash(image: Image.Image, size: int = 8) -> int:
    """64-bit dHash: brightness gradients of a 9x8 thumbnail; equal for resized or recompressed
    copies of a photo."""
    small = np.asarray(image.convert("L").resize((size + 1, size), Image.Resampling.LANCZOS))
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    return int("".join("1" if bit else "0" for bit in bits), 2)


def _clean_bytes(item: Item, image_format: str | None, oriented: Image.Image) -> tuple[bytes, bool]:
    """Bytes to write for ``item`` without metadata, and whether it had to be re-encoded."""
    with Image.open(io.BytesIO(item.content)) as original:
        orientation = original.getexif().get(_ORIENTATION_TAG, 1)
    if image_format == "JPEG" and orientation not in range(2, 9):
        return strip_jpeg_metadata(item.content), False
    buffer = io.BytesIO()
    if image_format == "JPEG":
        oriented.save(buffer, format="JPEG", quality=95)
    else:
        oriented.save(buffer, format="PNG")
    return buffer.getvalue(), True


def _near_pairs(hashes: np.ndarray, max_distance: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Index pairs of distinct 64-bit ``hashes`` at most ``max_distance`` bits apart.

    Multi-index hashing: cut the 64 bits into ``max_distance + 1`` pieces. Two hashes within
    ``max_distance`` bits differ in at most that many pieces, so at least one piece is equal
    (pigeonhole): only hashes that share a piece value are compared. Per piece, sorting by its
    value puts those side by side, and comparing each hash with the one ``offset`` places further
    on, for growing offsets, visits every same-piece pair. Random hashes share a piece with few
    others, so the work grows about linearly with their number.
    """
    pieces = min(max_distance + 1, 64)
    bounds = np.linspace(0, 64, pieces + 1).round().astype(np.uint64)
    for low, high in itertools.pairwise(bounds):
        mask = np.uint64((1 << int(high - low)) - 1)
        keys = (hashes >> low) & mask
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        for offset in range(1, len(hashes)):
            same = sorted_keys[offset:] == sorted_keys[:-offset]
            if not same.any():
                break  # no run of equal keys is longer than this offset
            first, second = order[:-offset][same], order[offset:][same]
            close = np.bitwise_count(hashes[first] ^ hashes[second]) <= max_distance
            yield first[close], second[close]


def _group_duplicates(items: list[Item], max_distance: int) -> list[list[Item]]:
    """Groups of items with the same content hash or dHashes within ``max_distance`` bits, in
    the order of their first item, each in item order."""
    parent = list(range(len(items)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        parent[find(j)] = find(i)

    # Exact duplicates (and equal dHashes) by hash map.
    first_by_sha: dict[str, int] = {}
    first_by_dhash: dict[int, int] = {}
    for i, item in enumerate(items):
        union(first_by_sha.setdefault(item.sha256, i), i)
        if max_distance >= 0:
            union(first_by_dhash.setdefault(item.dhash, i), i)
    # Near duplicates: between distinct dHashes, one item stands for each.
    if max_distance >= 64:  # any two 64-bit hashes
        for i in range(1, len(items)):
            union(0, i)
    elif max_distance > 0 and len(first_by_dhash) > 1:
        representatives = list(first_by_dhash.values())
        hashes = np.array([items[i].dhash for i in representatives], dtype=np.uint64)
        for first, second in _near_pairs(hashes, max_distance):
            for a, b in zip(first.tolist(), second.tolist(), strict=True):
                union(representatives[a], representatives[b])
    groups: dict[int, list[Item]] = {}
    for i, item in enumerate(items):
        groups.setdefault(find(i), []).append(item)
    return [group for group in groups.values() if len(group) > 1]


def prepare(
    raw: Path,
    out: Path,
    classes: Sequence[str] = ("hot_dog", "not_hot_dog"),
    leaks: str = "drop-from-train",
    skip_corrupt: bool = False,
    max_hash_distance: int = 0,
    report_path: Path | None = None,
) -> dict[str, Any]:
    """Run the preparation; returns the data report, also written to ``report_path``
    (default ``out/report.json``)."""
    if leaks not in LEAK_POLICIES:
        choices = ", ".join(LEAK_POLICIES)
        raise DatasetError(f"Unknown leak policy {leaks!r}; use one of {choices}.")
    if not raw.is_dir():
        raise DatasetError(
            f"Raw data folder {raw} does not exist; run `dvc pull`, or point it at a folder "
            "laid out as RAW/{train,test}/{class}/*.jpg."
        )
    report = Report()
    items: list[Item] = []
    decoded: dict[int, tuple[str | None, Image.Image]] = {}
    for split in SPLITS:
        for sample in list_split(raw, split, classes):
            item = Item(split, classes[sample.label], sample.path)
            try:
                item.content = sample.path.read_bytes()
                image = decode_image(item.content, source=str(sample.path))
            except UnreadableImageError as error:
                report.unreadable.append({"file": str(sample.path), "reason": error.reason})
                continue
            except OSError as error:
                report.unreadable.append({"file": str(sample.path), "reason": str(error)})
                continue
            with Image.open(io.BytesIO(item.content)) as probe:
                image_format = probe.format
            item.sha256 = hashlib.sha256(item.content).hexdigest()
            item.dhash = difference_hash(image)
            item.width, item.height = image.size
            decoded[id(item)] = (image_format, image)
            items.append(item)
    if report.unreadable and not skip_corrupt:
        listing = "; ".join(f"{u['file']} {u['reason']}" for u in report.unreadable)
        raise DatasetError(
            f"{len(report.unreadable)} raw file(s) cannot be used as images: {listing}. "
            "Remove or replace them, or prepare with skip_corrupt to drop them."
        )

    for group in _group_duplicates(items, max_hash_distance):
        report.duplicate_groups.append([str(item.source) for item in group])
        splits = {item.split for item in group}
        keep_split = None
        if len(splits) > 1 and leaks != "keep":
            keep_split = "test" if leaks == "drop-from-train" else "train"
        kept_one = False
        for item in group:
            if keep_split and item.split != keep_split:
                item.dropped = f"duplicate of a {keep_split} image (train/test leak)"
            elif kept_one and (keep_split or len(splits) == 1):
                item.dropped = "duplicate within its split"
            else:
                kept_one = True

    if out.exists():
        shutil.rmtree(out)
    manifest_rows = []
    for item in items:
        if item.dropped:
            report.dropped.append({"file": str(item.source), "reason": item.dropped})
            continue
        image_format, image = decoded[id(item)]
        content, reencoded = _clean_bytes(item, image_format, image)
        report.rotated += reencoded and image_format == "JPEG"
        if image_format == "JPEG":
            report.metadata_stripped += strip_jpeg_metadata(item.content) != item.content
        suffix = item.source.suffix.lower() if image_format == "JPEG" else ".png"
        target = out / item.split / item.label / (item.source.stem + suffix)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        manifest_rows.append(
            [
                target.relative_to(out).as_posix(),
                item.split,
                item.label,
                hashlib.sha256(content).hexdigest(),
                len(content),
                item.width,
                item.height,
            ]
        )
    for unreadable in report.unreadable:
        report.dropped.append({"file": unreadable["file"], "reason": unreadable["reason"]})
    counts = Counter((row[1], row[2]) for row in manifest_rows)
    report.counts = {
        split: {label: counts[(split, label)] for label in classes} for split in SPLITS
    }
    out.mkdir(parents=True, exist_ok=True)
    with (out / "manifest.csv").open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["file", "split", "label", "sha256", "bytes", "width", "height"])
        writer.writerows(manifest_rows)
    result = report.as_dict()
    report_path = report_path or out / "report.json"
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hotdog-prepare", description=__doc__.splitlines()[0])
    parser.add_argument("raw", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--leaks", choices=LEAK_POLICIES, default="drop-from-train")
    parser.add_argument("--skip-corrupt", action="store_true")
    parser.add_argument("--max-hash-distance", type=int, default=0)
    parser.add_argument("--report", type=Path, help="data report path (default OUT/report.json)")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        report = prepare(
            args.raw,
            args.out,
            leaks=args.leaks,
            skip_corrupt=args.skip_corrupt,
            max_hash_distance=args.max_hash_distance,
            report_path=args.report,
        )
    summary = {k: report[k] for k in ("images", "counts", "rotated", "metadata_stripped")}
    print(json.dumps(summary | {"dropped": len(report["dropped"])}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
