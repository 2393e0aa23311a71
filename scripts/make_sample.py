"""Cut the small sample shipped in data/sample from a full copy of the Kaggle dataset.

    python scripts/make_sample.py ../shared/data/hotdog data/sample

Takes a seeded random choice of PER_CLASS photos per class and split, resizes them so the short
side is SHORT_SIDE pixels, and saves them as JPEG without metadata (many originals carry GPS
tags). The known train/test duplicate and near-duplicates are left out.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from PIL import Image, ImageOps

PER_CLASS = 20
SHORT_SIDE = 256
QUALITY = 85
SEED = 2026
# Listed in the dataset's SOURCE.md: an exact train/test duplicate and two near-duplicate pairs.
EXCLUDED = {
    "test/not_hot_dog/76271.jpg",
    "train/not_hot_dog/97656.jpg",
    "test/hot_dog/413426.jpg",
    "test/hot_dog/410713.jpg",
    "train/hot_dog/1051628.jpg",
    "train/hot_dog/1051643.jpg",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("destination", type=Path)
    args = parser.parse_args()
    rng = random.Random(SEED)
    for split in ("train", "test"):
        for label in ("hot_dog", "not_hot_dog"):
            folder = args.source / split / label
            files = sorted(
                p for p in folder.glob("*.jpg") if f"{split}/{label}/{p.name}" not in EXCLUDED
            )
            out = args.destination / split / label
            out.mkdir(parents=True, exist_ok=True)
            for path in sorted(rng.sample(files, PER_CLASS)):
                with Image.open(path) as image:
                    picture = ImageOps.exif_transpose(image).convert("RGB")
                scale = SHORT_SIDE / min(picture.size)
                if scale < 1:
                    size = (round(picture.width * scale), round(picture.height * scale))
                    picture = picture.resize(size, Image.Resampling.LANCZOS)
                picture.save(out / path.name, quality=QUALITY, optimize=True)


if __name__ == "__main__":
    main()
