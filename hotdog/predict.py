"""Classify images with a trained checkpoint: ``python -m hotdog.predict CKPT PATH... [--json]``.

PATH may be image files or folders (searched recursively for images). Each line gives the file,
the label and its probability, and ``unsure`` when the model is too unsure to say (the label is
still its best guess). Files that cannot be read are reported and skipped; the exit status is
then 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from hotdog.core.answers import answer
from hotdog.core.cli import local_only, positive_int
from hotdog.core.errors import HotdogError, exit_on_user_error
from hotdog.core.images import UnreadableImageError, read_image
from hotdog.data import preprocess
from hotdog.models import HotdogClassifier, load_classifier

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders as the images below them (sorted); a missing path is an error."""
    found: list[Path] = []
    for raw in paths:
        path = local_only(raw, "Image")
        if path.is_dir():
            found += sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
            )
        elif path.exists():
            found.append(path)
        else:
            raise HotdogError(f"{path} does not exist; pass image files or folders of images.")
    return found


def _batches(items: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@torch.inference_mode()
def predict_files(
    model: HotdogClassifier, files: Sequence[Path], batch_size: int = 32
) -> list[dict[str, Any]]:
    """One result per file: label, class probabilities and whether the model is unsure
    (:func:`hotdog.core.answers.answer`), or the reason it was skipped."""
    results: list[dict[str, Any]] = []
    config = model.data_config
    for batch in _batches(files, batch_size):
        tensors, readable = [], []
        for path in batch:
            try:
                image = read_image(path, min_short_side=config.resize_size)
            except UnreadableImageError as error:
                results.append({"file": str(path), "error": error.reason})
                continue
            tensors.append(preprocess(image, config))
            readable.append(path)
        if not tensors:
            continue
        probabilities = model.predict_proba(torch.stack(tensors))
        for path, row in zip(readable, probabilities.tolist(), strict=True):
            results.append({"file": str(path)} | answer(row, model.class_names, model.unsure_below))
    order = {str(path): i for i, path in enumerate(files)}
    return sorted(results, key=lambda result: order[result["file"]])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hotdog-predict", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a checkpoint written by hotdog.train")
    parser.add_argument("paths", nargs="+", help="image files or folders")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--batch-size", type=positive_int, default=32)
    args = parser.parse_args(argv)

    with exit_on_user_error():
        files = expand_paths(args.paths)
        if not files:
            raise HotdogError(
                f"No images found in {', '.join(args.paths)}; pass image files or folders "
                f"holding them ({', '.join(sorted(IMAGE_SUFFIXES))})."
            )
        model = load_classifier(args.checkpoint)
        results = predict_files(model, files, args.batch_size)

    failed = 0
    for result in results:
        if args.json:
            print(json.dumps(result))
        elif "error" in result:
            print(f"{result['file']}\terror: {result['error']}")
        else:
            unsure = "\tunsure" if result["unsure"] else ""
            print(f"{result['file']}\t{result['label']}\t{result['probability']:.3f}{unsure}")
        failed += "error" in result
    if failed:
        print(f"{failed} of {len(results)} file(s) could not be read.", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
