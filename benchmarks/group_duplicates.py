"""Duplicate grouping of the prepare stage: the indexed grouping against comparing every pair.

    python benchmarks/group_duplicates.py [--sizes 1000 10000 100000] [--pairwise-max 1000]
        [--kaggle ../shared/data/hotdog]

Times ``hotdog.pipeline.prepare._group_duplicates`` on random 64-bit dHashes (one in seven a near
copy of another, 0-6 bits flipped; one in eleven sharing its content hash), median of three runs,
beside the pairwise grouping the stage used before (its code is kept here as the baseline) on
the sizes it can do in reasonable time. With ``--kaggle``, prepares the Kaggle set with both
groupings and checks that the data reports are identical.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np

from hotdog.pipeline import prepare as stage
from hotdog.pipeline.prepare import Item, _group_duplicates


def pairwise_groups(items: list[Item], max_distance: int) -> list[list[Item]]:
    """The grouping before the index: every item against every later one (the baseline)."""
    parent = list(range(len(items)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    hashes = np.array([item.dhash for item in items], dtype=np.uint64)
    for i, item in enumerate(items):
        distance = np.array(
            [bin(int(h)).count("1") for h in np.bitwise_xor(hashes[i + 1 :], hashes[i])],
            dtype=np.int64,
        )
        for j in np.flatnonzero(distance <= max_distance) + i + 1:
            parent[find(int(j))] = find(i)
        for j in range(i + 1, len(items)):
            if items[j].sha256 == item.sha256:
                parent[find(j)] = find(i)
    groups: dict[int, list[Item]] = {}
    for i, item in enumerate(items):
        groups.setdefault(find(i), []).append(item)
    return [group for group in groups.values() if len(group) > 1]


def synthetic_items(count: int, seed: int = 0) -> list[Item]:
    rng = np.random.default_rng(seed)
    hashes = [int(h) * 2 + 1 for h in rng.integers(0, 2**63, count, dtype=np.int64)]
    shas = [f"{i:064x}" for i in range(count)]
    for i in range(0, count, 7):
        flips = rng.choice(64, size=int(rng.integers(0, 7)), replace=False)
        hashes[i] = hashes[int(rng.integers(0, i + 1))] ^ sum(1 << int(b) for b in flips)
    for i in range(3, count, 11):
        shas[i] = shas[int(rng.integers(0, count))]
    return [
        Item("train", "x", Path(f"{i}.jpg"), sha256=shas[i], dhash=hashes[i]) for i in range(count)
    ]


def median_seconds(function, *args, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function(*args)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _names(groups: list[list[Item]]) -> list[list[str]]:
    return [[str(item.source) for item in group] for group in groups]


def compare_on_kaggle(raw: Path, distances: list[int]) -> None:
    for distance in distances:
        reports = []
        for grouping in (_group_duplicates, pairwise_groups):
            with (
                tempfile.TemporaryDirectory() as out,
                mock.patch.object(stage, "_group_duplicates", grouping),
            ):
                start = time.perf_counter()
                reports.append(
                    stage.prepare(raw, Path(out) / "prepared", max_hash_distance=distance)
                )
                seconds = time.perf_counter() - start
            print(
                f"  kaggle, max distance {distance}, {grouping.__name__}: prepare {seconds:.1f} s"
            )
        same = reports[0] == reports[1]
        groups = len(reports[0]["duplicate_groups"])
        dropped = len(reports[0]["dropped"])
        print(f"  -> identical reports: {same} ({groups} groups, {dropped} dropped)")
        if not same:
            raise SystemExit(f"the groupings differ on {raw} at max distance {distance}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--distances", type=int, nargs="+", default=[0, 6])
    parser.add_argument("--pairwise-max", type=int, default=1000)
    parser.add_argument("--kaggle", type=Path, default=None)
    args = parser.parse_args()
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next(
        (line.split(":", 1)[1].strip() for line in cpu.splitlines() if "Model name" in line),
        platform.processor(),
    )
    print(f"CPU: {model}; median of 3 runs")
    print("| hashes | max distance | indexed | pairwise (before) | same groups |")
    print("|---|---|---|---|---|")
    for size in args.sizes:
        items = synthetic_items(size)
        for distance in args.distances:
            indexed = median_seconds(_group_duplicates, items, distance)
            row = f"| {size:,} | {distance} | {indexed:.2f} s |"
            if size <= args.pairwise_max:
                before = median_seconds(pairwise_groups, items, distance, repeat=1)
                same = _names(_group_duplicates(items, distance)) == _names(
                    pairwise_groups(items, distance)
                )
                row += f" {before:.2f} s | {same} |"
            else:
                row += " not run | |"
            print(row, flush=True)
    if args.kaggle:
        compare_on_kaggle(args.kaggle, args.distances)


if __name__ == "__main__":
    main()
