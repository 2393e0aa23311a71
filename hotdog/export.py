"""Export a checkpoint for serving: ``python -m hotdog.export CHECKPOINT [--out DIR]``.

Writes ``model.onnx`` (float32) and ``model.int8.onnx`` (static int8: per-channel QDQ, calibrated
on training photos), each with a JSON sidecar ``<model>.json`` that the service reads: class
names, preprocessing, the model file's SHA-256, the source checkpoint's SHA-256, the test
accuracy measured here and the "unsure" threshold, refitted for each model on the training run's
validation photos. Each model has a second output, a reduced embedding for drift detection,
and a reference profile ``<model>.reference.jsonl`` (see ``hotdog.monitor``).
Both models are checked on the test split against the checkpoint run in PyTorch; an int8 model
that loses more than ``--max-int8-drop`` points of accuracy against the float32 one is not
written.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hotdog import __version__
from hotdog.core.answers import is_unsure, unsure_threshold
from hotdog.core.artifact import ModelMetadata, model_version, sidecar_uri
from hotdog.core.cli import non_negative_float, output_file, output_folder, positive_int
from hotdog.core.dataset import list_split
from hotdog.core.errors import HotdogError, exit_on_user_error
from hotdog.core.images import read_image
from hotdog.core.preprocessing import DataConfig, preprocess_array
from hotdog.models import HotdogClassifier, load_classifier
from hotdog.monitor.profile import (
    image_statistics,
    matching_features,
    prediction_record,
    reference_uri,
    split_reference_half,
    write_records,
)

log = logging.getLogger("hotdog.export")

OPSET = 17
INPUT_NAME, OUTPUT_NAME, EMBEDDING_NAME = "image", "probabilities", "embedding"
# The pooled backbone features (1280 numbers for EfficientNet-Lite) times a fixed random Gaussian
# matrix: 64 numbers keep distances between images on average (each pair within about +-20 %,
# Johnson-Lindenstrauss) and make a logged record ~12x smaller. Unlike PCA fitted on the
# reference, a random projection does not discard the directions the reference happens not to
# vary in, where drift may show.
EMBEDDING_DIM, EMBEDDING_SEED = 64, 0
FP32_NAME, INT8_NAME = "model.onnx", "model.int8.onnx"
# Export is numerically the same network: larger differences mean a broken export.
MAX_FP32_PROBABILITY_DIFFERENCE = 1e-3


class ProbabilityModel(nn.Module):
    """The classifier as served: normalised NCHW images in; class probabilities and the projected
    pooled embedding out, computed in the same pass."""

    projection: torch.Tensor

    def __init__(self, classifier: HotdogClassifier, tta_hflip: bool) -> None:
        super().__init__()
        net: Any = classifier.net  # a timm model: forward_features, forward_head, num_features
        self.net = net
        self.tta_hflip = tta_hflip
        generator = torch.Generator().manual_seed(EMBEDDING_SEED)
        projection = torch.randn(int(net.num_features), EMBEDDING_DIM, generator=generator)
        self.register_buffer("projection", projection / EMBEDDING_DIM**0.5)

    def _pooled(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.forward_head(self.net.forward_features(images), pre_logits=True)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self._pooled(images)
        if self.tta_hflip:
            pooled = (pooled + self._pooled(images.flip(-1))) / 2
        # The head is linear, so the logits of the averaged features are the averaged logits.
        logits = self.net.get_classifier()(pooled)
        return logits.softmax(-1), pooled @ self.projection


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote and measured."""

    fp32_path: Path
    int8_path: Path | None
    accuracy: dict[str, float]
    fp32_max_difference: float
    int8_agreement: float
    refused_int8: str | None = None
    # Per precision: the "unsure" threshold written to its sidecar, and the share of the test
    # split it answers unsure.
    unsure_below: dict[str, float] = field(default_factory=dict)
    unsure_test_share: dict[str, float] = field(default_factory=dict)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sidecar_path(model_path: Path) -> Path:
    """Where a model's metadata lives: next to it, as the service looks for it."""
    return Path(sidecar_uri(str(model_path)))


def _default_data_root(checkpoint: Path) -> Path | None:
    """The data a checkpoint was trained on, from its run folder's ``config.yaml``."""
    config = checkpoint.resolve().parent.parent / "config.yaml"
    if not config.is_file():
        return None
    from omegaconf import OmegaConf

    root = OmegaConf.select(OmegaConf.load(config), "data.root", default=None)
    return Path(root) if isinstance(root, str) and "${" not in root else None


def _validation_files(classifier: HotdogClassifier, checkpoint: Path, root: Path) -> list[Path]:
    """The training run's validation photos that are under ``root``, as its checkpoint lists
    them (none in checkpoints from before the list); says what is missing."""
    listed = [root / name for name in classifier.validation_files]
    found = [path for path in listed if path.is_file()]
    if not listed:
        log.warning("%s lists no validation photos (trained before the list existed)", checkpoint)
    elif len(found) < len(listed):
        log.warning(
            "%d of the %d validation photos %s lists are not under %s",
            len(listed) - len(found),
            len(listed),
            checkpoint,
            root,
        )
    return found


def _image_facts(path: Path) -> dict[str, Any]:
    from PIL import Image

    with Image.open(path) as image:
        return {"width": image.width, "height": image.height, "image_format": image.format}


def profile_records(
    model_path: Path,
    version: str,
    class_names: Sequence[str],
    data_config: DataConfig,
    files: Sequence[Path],
    images: np.ndarray,
    root: Path,
) -> list[dict[str, Any]]:
    """The exported model's prediction records for photos, as the service logs them, each with
    its ``source`` (the photo's path under the data root) so the profile says which photos it
    holds."""
    session = _session(model_path)
    records = []
    for start in range(0, len(images), 16):
        batch = images[start : start + 16]
        probabilities, embeddings = session.run([OUTPUT_NAME, EMBEDDING_NAME], {INPUT_NAME: batch})
        for offset, (array, row, embedding) in enumerate(
            zip(batch, probabilities, embeddings, strict=True)
        ):
            path = files[start + offset]
            record = prediction_record(
                model_version=version,
                class_names=class_names,
                probabilities=row,
                statistics=image_statistics(array, data_config),
                embedding=embedding,
                **_image_facts(path),
            )
            record["source"] = path.relative_to(root).as_posix()
            records.append(record)
    return records


def _arrays(paths: Sequence[Path], data_config: DataConfig) -> Iterator[np.ndarray]:
    for path in paths:
        image = read_image(path, min_short_side=data_config.resize_size)
        yield preprocess_array(image, data_config)[None]


def _session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # quiet the optimizer's notes about unused initializers
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _probabilities(
    run: Callable[[np.ndarray], np.ndarray], images: np.ndarray, batch_size: int = 16
) -> np.ndarray:
    """``run`` (a model) over ``images`` (N, 3, H, W) in batches."""
    return np.concatenate(
        [run(images[start : start + batch_size]) for start in range(0, len(images), batch_size)]
    )


def _onnx_runner(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    session = _session(path)
    return lambda batch: session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]


def _torch_runner(model: ProbabilityModel) -> Callable[[np.ndarray], np.ndarray]:
    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(batch))[0].numpy()

    return run


def export_onnx(model: ProbabilityModel, input_size: int, path: Path) -> None:
    """Trace ``model`` into an ONNX file with a dynamic batch dimension."""
    example = torch.zeros(1, 3, input_size, input_size)
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of the dynamo one, which needs
        # onnxscript and takes ~10x longer for the same graph; it is still supported in 2.x.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model.eval(),
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME, EMBEDDING_NAME],
            dynamic_axes={name: {0: "batch"} for name in (INPUT_NAME, OUTPUT_NAME, EMBEDDING_NAME)},
            opset_version=OPSET,
            dynamo=False,
        )


def quantize_int8(
    fp32_path: Path, int8_path: Path, calibration: Sequence[Path], data_config: DataConfig
) -> None:
    """Static int8 quantization (per-channel weights, QDQ format) calibrated on ``calibration``.

    onnxruntime's dynamic quantization is several times slower than float32 on convnets; static
    quantization with calibrated activation ranges is the fast one.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.arrays = _arrays(calibration, data_config)

        def get_next(self) -> dict[str, np.ndarray] | None:
            array = next(self.arrays, None)
            return None if array is None else {INPUT_NAME: array}

    with tempfile.TemporaryDirectory() as scratch:
        # Folding BatchNorm and shapes first roughly doubles the speed of the int8 model.
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        # The softmax stays in float: quantized to 8 bits, probabilities would move in steps of
        # 1/255 and no longer add up to 1. So does the embedding's projection (one small matrix
        # product), which keeps the int8 embedding as close as the features allow.
        graph = onnx.load(prepared).graph
        embedding = {EMBEDDING_NAME}
        softmax = [
            node.name
            for node in graph.node
            if node.op_type == "Softmax" or embedding & set(node.output)
        ]
        quantize_static(
            str(prepared),
            str(int8_path),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=softmax,
        )


def _write_sidecar(
    model_path: Path,
    *,
    precision: str,
    classifier: HotdogClassifier,
    data_config: DataConfig,
    tta_hflip: bool,
    checkpoint: Path,
    checkpoint_sha256: str,
    accuracy: float,
    test_images: int,
    unsure_below: float,
) -> ModelMetadata:
    model_sha256 = sha256_of(model_path)
    # The served model's own preprocessing, TTA and threshold, which export may change from the
    # checkpoint's.
    info = replace(
        classifier.inference_info(),
        data_config=data_config,
        tta_hflip=tta_hflip,
        unsure_below=unsure_below,
    )
    metadata = ModelMetadata(
        inference=info,
        version=model_version(info.backbone, precision, model_sha256),
        precision=precision,
        sha256=model_sha256,
        format="onnx",
        input_name=INPUT_NAME,
        output_name=OUTPUT_NAME,
        embedding_name=EMBEDDING_NAME,
        embedding_dim=EMBEDDING_DIM,
        reference_profile=Path(reference_uri(str(model_path))).name,
        opset=OPSET,
        test_accuracy=round(accuracy, 6),
        test_images=test_images,
        source_checkpoint={"path": str(checkpoint), "sha256": checkpoint_sha256},
        exported_at=datetime.now(UTC).isoformat(timespec="seconds"),
        hotdog_version=__version__,
    )
    sidecar_path(model_path).write_text(metadata.to_json())
    return metadata


def int8_refusal(
    accuracy: dict[str, float], test_images: int, max_drop: float, fp32_path: Path
) -> str | None:
    """Why the int8 model must not be used (it lost too much accuracy), or None.

    One image more wrong is always tolerated: on a small test split (the 40 of the sample) one
    image is already several points.
    """
    drop = (accuracy["fp32"] - accuracy["int8"]) * 100
    if drop <= max(max_drop, 100 / test_images) + 1e-9:
        return None
    return (
        f"the int8 model scores {accuracy['int8']:.1%} on the {test_images} test images against "
        f"{accuracy['fp32']:.1%} in float32, {drop:.1f} points lower (the limit is {max_drop:g}); "
        f"serve {fp32_path} or calibrate on more images (--calibration-images)"
    )


def export(
    checkpoint: str | Path,
    out_dir: str | Path = "models/export",
    data_root: str | Path | None = None,
    calibration_images: int = 128,
    max_int8_drop: float = 1.0,
    image_size: int | None = None,
    tta_hflip: bool | None = None,
    seed: int = 0,
) -> ExportResult:
    """Export ``checkpoint`` to ONNX float32 and int8 in ``out_dir``, checking both on the test
    split of ``data_root`` (default: the data the checkpoint's run was trained on).

    ``image_size`` and ``tta_hflip`` (default: the checkpoint's) trade accuracy for speed; the
    accuracy written to the sidecars is measured with the values chosen.
    """
    checkpoint = Path(checkpoint)
    classifier = load_classifier(checkpoint)
    data_config = classifier.data_config
    if image_size:
        data_config = replace(data_config, input_size=image_size)
    if tta_hflip is None:
        tta_hflip = classifier.tta_hflip
    root = Path(data_root) if data_root else _default_data_root(checkpoint)
    if root is None or not root.is_dir():
        raise HotdogError(
            f"Data folder {root} for calibration and the parity check does not exist; "
            "pass --data ROOT (a folder with train/ and test/)."
        )
    classes = classifier.class_names
    train_files = [sample.path for sample in list_split(root, "train", classes)]
    test_samples = list_split(root, "test", classes)
    test_files = [sample.path for sample in test_samples]
    labels = np.array([sample.label for sample in test_samples])
    calibration = random.Random(seed).sample(train_files, min(calibration_images, len(train_files)))

    out = output_folder(out_dir)
    fp32_path, int8_path = out / FP32_NAME, out / INT8_NAME
    for stale in (int8_path, sidecar_path(int8_path), Path(reference_uri(str(int8_path)))):
        stale.unlink(missing_ok=True)  # never leave an int8 model from an older checkpoint

    network = ProbabilityModel(classifier, tta_hflip).eval()
    log.info("exporting %s to %s", checkpoint, fp32_path)
    export_onnx(network, data_config.input_size, fp32_path)
    test_images = np.concatenate(list(_arrays(test_files, data_config)))  # decoded once
    reference = _probabilities(_torch_runner(network), test_images)
    fp32 = _probabilities(_onnx_runner(fp32_path), test_images)
    fp32_difference = float(np.abs(fp32 - reference).max())
    if fp32_difference > MAX_FP32_PROBABILITY_DIFFERENCE:
        fp32_path.unlink()
        raise HotdogError(
            f"The ONNX export of {checkpoint} differs from PyTorch by {fp32_difference:.2g} in "
            "probability; this is an exporter bug, please report it with the checkpoint."
        )
    accuracy = {
        "torch": float((reference.argmax(1) == labels).mean()),
        "fp32": float((fp32.argmax(1) == labels).mean()),
    }

    log.info("quantizing to int8 with %d calibration images", len(calibration))
    quantize_int8(fp32_path, int8_path, calibration, data_config)
    int8 = _probabilities(_onnx_runner(int8_path), test_images)
    accuracy["int8"] = float((int8.argmax(1) == labels).mean())
    agreement = float((int8.argmax(1) == fp32.argmax(1)).mean())

    # The "unsure" threshold of each served model, refitted on the run's validation photos with
    # its own preprocessing (no flip average, another size and int8 all make it more or less
    # confident than the checkpoint the training fitted it for).
    # Without any of the photos, the served models keep the checkpoint's threshold, which
    # flags fewer of their answers than intended (they are surer than the checkpoint).
    unsure_below = dict.fromkeys(("fp32", "int8"), classifier.unsure_below)
    validation = _validation_files(classifier, checkpoint, root)
    if validation:
        val_images = np.concatenate(list(_arrays(validation, data_config)))
        for precision, path in (("fp32", fp32_path), ("int8", int8_path)):
            confidences = _probabilities(_onnx_runner(path), val_images).max(1)
            unsure_below[precision] = unsure_threshold(
                confidences.tolist(), classifier.unsure_share
            )
    else:
        log.warning("the served models keep its unsure threshold (%.3f)", classifier.unsure_below)
    unsure_test_share = {
        precision: float(is_unsure(probabilities.max(1), unsure_below[precision]).mean())
        for precision, probabilities in (("fp32", fp32), ("int8", int8))
    }

    checkpoint_sha256 = sha256_of(checkpoint)
    common: dict[str, Any] = {
        "classifier": classifier,
        "data_config": data_config,
        "tta_hflip": tta_hflip,
        "checkpoint": checkpoint,
        "checkpoint_sha256": checkpoint_sha256,
        "test_images": len(test_files),
    }
    sidecar = _write_sidecar(
        fp32_path,
        precision="fp32",
        accuracy=accuracy["fp32"],
        unsure_below=unsure_below["fp32"],
        **common,
    )
    # The reference profile: photos the model did not fit, from the source the service will
    # see (a matched half of the test split, chosen on the float32 model's records). Training
    # photos would look more familiar to the model than any new photo; the validation split
    # comes from Kaggle's train folder, which differs from its test folder enough to raise false
    # alarms (docs/monitoring.md).
    names = classifier.class_names
    records = profile_records(
        fp32_path, sidecar.version, names, data_config, test_files, test_images, root
    )
    half, _ = split_reference_half(
        list(range(len(records))), labels.tolist(), seed, matching_features(records)
    )
    write_records(Path(reference_uri(str(fp32_path))), [records[index] for index in half])
    refused = int8_refusal(accuracy, len(test_files), max_int8_drop, fp32_path)
    if refused:
        int8_path.unlink()
        del unsure_below["int8"], unsure_test_share["int8"]
    else:
        sidecar = _write_sidecar(
            int8_path,
            precision="int8",
            accuracy=accuracy["int8"],
            unsure_below=unsure_below["int8"],
            **common,
        )
        reference_files = [test_files[index] for index in half]
        int8_records = profile_records(
            int8_path, sidecar.version, names, data_config, reference_files, test_images[half], root
        )
        write_records(Path(reference_uri(str(int8_path))), int8_records)
    return ExportResult(
        fp32_path=fp32_path,
        int8_path=None if refused else int8_path,
        accuracy=accuracy,
        fp32_max_difference=fp32_difference,
        int8_agreement=agreement,
        refused_int8=refused,
        unsure_below=unsure_below,
        unsure_test_share=unsure_test_share,
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m hotdog.export",
        description="Export a checkpoint to ONNX float32 and static int8 for the service.",
    )
    parser.add_argument("checkpoint", help="a checkpoint written by hotdog.train")
    parser.add_argument(
        "--out", default="models/export", help="folder for the models (default: %(default)s)"
    )
    parser.add_argument(
        "--data",
        default=None,
        help="dataset root with train/ and test/ (default: the checkpoint's training data)",
    )
    parser.add_argument(
        "--calibration-images",
        type=positive_int,
        default=128,
        help="training photos that set the int8 activation ranges (default: %(default)s)",
    )
    parser.add_argument(
        "--image-size",
        type=positive_int,
        default=None,
        help="input size to serve at (default: the checkpoint's evaluation size)",
    )
    parser.add_argument(
        "--tta",
        choices=["true", "false"],
        default=None,
        help="average with the mirror image (default: as the checkpoint was evaluated)",
    )
    parser.add_argument("--report", default=None, help="also write the summary to this JSON file")
    parser.add_argument(
        "--max-int8-drop",
        type=non_negative_float,
        default=1.0,
        help="refuse an int8 model whose test accuracy is more points below float32's "
        "(default: %(default)s)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(message)s")
    log.setLevel(logging.INFO)  # onnxruntime's quantizer logs a line per adjusted tensor at INFO
    with exit_on_user_error():
        report = output_file(args.report, "--report") if args.report else None
        result = export(
            args.checkpoint,
            args.out,
            args.data,
            calibration_images=args.calibration_images,
            max_int8_drop=args.max_int8_drop,
            image_size=args.image_size,
            tta_hflip=None if args.tta is None else args.tta == "true",
        )
    summary = {
        "fp32": str(result.fp32_path),
        "int8": str(result.int8_path) if result.int8_path else None,
        "test_accuracy": {name: round(value, 4) for name, value in result.accuracy.items()},
        "fp32_max_probability_difference": result.fp32_max_difference,
        "int8_fp32_agreement": round(result.int8_agreement, 4),
        "unsure_below": {name: round(value, 4) for name, value in result.unsure_below.items()},
        "unsure_test_share": {
            name: round(value, 4) for name, value in result.unsure_test_share.items()
        },
    }
    print(json.dumps(summary, indent=2))
    if report is not None:
        report.write_text(json.dumps(summary, indent=2) + "\n")
    if result.refused_int8:
        print(f"error: no int8 model written: {result.refused_int8}.", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
