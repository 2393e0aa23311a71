"""Does the served model keep the checkpoint's accuracy, on the Kaggle test split and off it?

    python benchmarks/served_accuracy.py --checkpoint models/train/checkpoints/best.ckpt \
        --export-dir models/export --set kaggle=data/prepared/test \
        --set stock=../shared/data/hotdog-stock/test --set ood=../shared/data/hotdog-ood/test

For each set (a folder with one sub-folder per class): the checkpoint as ``hotdog.predict``
runs it (its own evaluation size and flip average), and each exported model as the service runs
it (``ClassifierService``: the service's decoding, preprocessing and onnxruntime session, fed the
photo's bytes as an upload). Prints accuracy with each class's recall as counts, the served
models' agreement with the checkpoint, the answers each says "unsure" with the wrong answers it
still gives with confidence, and the int8 model's gap to float32 against the export's
gate (``--max-drop``, points; the export checks it on the Kaggle test split only). Nothing is
fitted: the development sets are only read. Writes JSON with ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from hotdog.core.dataset import list_split
from hotdog.predict import predict_files
from hotdog.serve.predictors import OnnxPredictor
from hotdog.serve.service import ClassifierService, Upload
from hotdog.serve.settings import Settings

BATCH = 16


Answer = tuple[str | None, bool]  # (label, unsure); (None, False) for a refused upload


def served_answers(model: Path, files: list[Path]) -> list[Answer]:
    """The label the service answers for each photo, and whether it says unsure."""
    predictor = OnnxPredictor(Settings(model_uri=str(model)))
    service = ClassifierService(predictor, max_pixels=Settings().max_pixels)
    answers: list[Answer] = []
    for start in range(0, len(files), BATCH):
        uploads = [Upload(path.name, path.read_bytes()) for path in files[start : start + BATCH]]
        outcomes, _ = service.classify(uploads)
        answers += [
            (None, False)
            if o.prediction is None
            else (o.prediction["label"], o.prediction["unsure"])
            for o in outcomes
        ]
    return answers


def scores(truth: list[str], answers: list[Answer], classes: list[str]) -> dict:
    """Accuracy with each class's recall, and what users see with unsure answers: how many are
    unsure, and how many wrong answers are still given with confidence (a refused upload is
    neither)."""
    correct = [label == true for (label, _), true in zip(answers, truth, strict=True)]
    unsure = [flag for _, flag in answers]
    answered = [label is not None for label, _ in answers]
    per_class = {
        name: f"{sum(c for c, t in zip(correct, truth, strict=True) if t == name)}/"
        f"{truth.count(name)}"
        for name in classes
    }
    return {
        "accuracy": sum(correct) / len(truth),
        "correct": sum(correct),
        "recall": per_class,
        "unsure": sum(unsure),
        "refused": answered.count(False),
        "wrong_when_sure": sum(
            a and not c and not u for a, c, u in zip(answered, correct, unsure, strict=True)
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--export-dir", type=Path, default=Path("models/export"))
    parser.add_argument(
        "--set", action="append", required=True, metavar="NAME=FOLDER", help="repeatable"
    )
    parser.add_argument("--max-drop", type=float, default=1.0, help="the export's int8 gate")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from hotdog.models import load_classifier

    classifier = load_classifier(args.checkpoint)
    classes = list(classifier.class_names)
    # The export refuses an int8 model that fails its gate: then only float32 is served.
    models = {
        precision: args.export_dir / file
        for precision, file in (("float32", "model.onnx"), ("int8", "model.int8.onnx"))
        if (args.export_dir / file).is_file()
    }
    report: dict[str, dict] = {}
    for name, folder in (item.split("=", 1) for item in args.set):
        folder = Path(folder)
        samples = list_split(folder.parent, folder.name, classes)
        files = [sample.path for sample in samples]
        truth = [classes[sample.label] for sample in samples]
        started = time.perf_counter()
        rows = {
            "checkpoint": [
                (r.get("label"), r.get("unsure", False)) for r in predict_files(classifier, files)
            ]
        }
        for precision, model in models.items():
            rows[precision] = served_answers(model, files)
        report[name] = {
            "photos": len(files),
            "seconds": round(time.perf_counter() - started, 1),
            **{key: scores(truth, labels, classes) for key, labels in rows.items()},
        }
        for precision in models:
            pairs = zip(rows[precision], rows["checkpoint"], strict=True)
            agree = sum(a[0] == b[0] for a, b in pairs)
            report[name][precision]["agrees_with_checkpoint"] = f"{agree}/{len(files)}"
        if "int8" in models:
            drop = 100 * (report[name]["float32"]["accuracy"] - report[name]["int8"]["accuracy"])
            report[name]["int8_drop_points"] = round(drop, 2)
            report[name]["within_gate"] = drop <= args.max_drop

    print(
        "| set | photos | model | accuracy | recall per class | agrees with checkpoint "
        "| unsure | wrong when sure |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, row in report.items():
        for key in ("checkpoint", *models):
            cell = row[key]
            recall = ", ".join(f"{c} {v}" for c, v in cell["recall"].items())
            agree = cell.get("agrees_with_checkpoint", "")
            wrong = row["photos"] - cell["correct"] - cell["refused"]
            print(
                f"| {name} | {row['photos']} | {key} | {cell['accuracy']:.1%} "
                f"({cell['correct']}/{row['photos']}) | {recall} | {agree} "
                f"| {cell['unsure']} | {cell['wrong_when_sure']} of {wrong} |"
            )
    for name, row in report.items():
        if "within_gate" not in row:
            continue
        verdict = "within" if row["within_gate"] else "OUTSIDE"
        print(f"{name}: int8 is {row['int8_drop_points']} points below float32, {verdict} the gate")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
