"""The prepare stage on many synthetic photos: time per photo at 1,000 and 10,000.

    python benchmarks/prepare_scale.py [--sizes 1000 10000] [--work /tmp/prepare-scale]

Writes N synthetic JPEGs (256x192 colour waves with noise; a few share a dHash by chance) in the
Kaggle layout, one in fifty an exact copy of another and one in fifty a downscaled copy (a near
duplicate), then times ``hotdog.pipeline.prepare.prepare`` on them (default max hash distance 0).
Everything is decoded in full, hashed, stripped of metadata and written again, so the time per
photo is the stage's, not the grouping's. Prints the CPU model; other work may share the machine.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
from PIL import Image

from hotdog.pipeline.prepare import prepare

CLASSES = ("hot_dog", "not_hot_dog")


def synthetic_photos(root: Path, count: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:192, 0:256].astype(np.float32)
    written: list[Path] = []
    for i in range(count):
        split = "train" if i % 2 else "test"
        folder = root / split / CLASSES[(i // 2) % 2]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i:06d}.jpg"
        if written and i % 50 == 7:  # an exact copy
            shutil.copy(written[int(rng.integers(len(written)))], path)
        elif written and i % 50 == 23:  # a smaller copy: the same dHash
            with Image.open(written[int(rng.integers(len(written)))]) as source:
                source.resize((192, 144), Image.Resampling.LANCZOS).save(path, quality=90)
        else:
            a, b, c = rng.uniform(-1, 1, 3)
            waves = np.sin(a * x / 20 + b * y / 15 + c * 6)[..., None]
            colours = rng.uniform(40, 215, 3)
            pixels = colours + 40 * waves + rng.normal(0, 12, (192, 256, 3))
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
        written.append(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--work", type=Path, default=Path("/tmp/prepare-scale"))
    args = parser.parse_args()
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((ln.split(":", 1)[1].strip() for ln in cpu.splitlines() if "Model name" in ln), "")
    print(f"CPU: {model}")
    print("| photos | prepare | per photo | duplicate groups | dropped |")
    print("|---|---|---|---|---|")
    for size in args.sizes:
        raw, out = args.work / f"raw-{size}", args.work / f"prepared-{size}"
        if not raw.is_dir():
            synthetic_photos(raw, size)
        start = time.perf_counter()
        report = prepare(raw, out)
        seconds = time.perf_counter() - start
        groups, dropped = len(report["duplicate_groups"]), len(report["dropped"])
        per_photo = 1000 * seconds / size
        row = f"| {size:,} | {seconds:.1f} s | {per_photo:.1f} ms | {groups} | {dropped} |"
        print(row, flush=True)
    shutil.rmtree(args.work)


if __name__ == "__main__":
    main()
