"""Drift monitoring: the exported embedding and reference profile, the drift tests and report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from hotdog.monitor.drift import (
    detect_drift,
    half_split_floor,
    ks_statistic,
    mmd_test,
    mmd_test_with_floor,
)
from hotdog.monitor.profile import (
    IMAGE_STATISTICS,
    RecordSet,
    prediction_record,
    read_records,
    split_reference_half,
    write_records,
)
from tests.conftest import SAMPLE, refusing_storage, run_cli

VERSION = "tf_efficientnet_lite0-int8-0123456789ab"
CLASSES = ["hot_dog", "not_hot_dog"]


def _records(
    count: int, seed: int, brightness: float = 0.45, embedding_shift: float = 0.0, version=VERSION
) -> list[dict]:
    """Records as the service writes them, with statistics and embeddings drawn at random."""
    rng = np.random.default_rng(seed)
    records = []
    for _ in range(count):
        hot = rng.beta(4, 2)
        embedding = rng.normal(size=16)
        embedding[:4] += embedding_shift
        records.append(
            prediction_record(
                model_version=version,
                class_names=CLASSES,
                probabilities=[hot, 1 - hot],
                statistics={
                    "brightness": rng.normal(brightness, 0.1),
                    "contrast": rng.normal(0.2, 0.05),
                    "saturation": rng.normal(0.4, 0.1),
                    "sharpness": rng.gamma(2, 0.01),
                },
                embedding=embedding,
                width=640,
                height=480,
                image_format="JPEG",
            )
        )
    return records


def _set(records: list[dict]) -> RecordSet:
    return RecordSet(records, skipped=0, files=1)


def test_same_distribution_is_not_drift_and_each_shift_is_caught_by_its_test():
    reference = _set(_records(300, seed=0))
    same = detect_drift(reference, _set(_records(100, seed=1)))
    assert not same.drift and same.score >= same.alpha
    assert {test.name for test in same.tests} >= {*IMAGE_STATISTICS, "confidence", "embedding"}

    darker = detect_drift(reference, _set(_records(100, seed=2, brightness=0.3)))
    flagged = {test.name for test in darker.tests if test.drift}
    assert darker.drift and "brightness" in flagged and "embedding" not in flagged

    # A change no single statistic shows: only the kernel test on the embeddings sees it.
    scene = detect_drift(reference, _set(_records(100, seed=3, embedding_shift=1.0)))
    flagged = {test.name for test in scene.tests if test.drift}
    assert scene.drift and flagged == {"embedding"}


def test_the_kernel_test_can_reach_the_threshold_at_a_small_alpha():
    # 500 permutations give p >= 0.002, above 0.01 / 8 tests: the test must add permutations.
    reference = _set(_records(300, seed=0))
    scene = detect_drift(reference, _set(_records(100, seed=3, embedding_shift=1.0)), alpha=0.01)
    (embedding,) = [test for test in scene.tests if test.name == "embedding"]
    assert embedding.p_value < scene.threshold and scene.drift


def test_effect_floor_ignores_a_significant_but_tiny_shift_in_a_large_window():
    # A day of logs (3,000 predictions) a few brightness levels brighter than the reference: the
    # p-value calls it significant, but it is smaller than two halves of the reference differ.
    reference = _set(_records(300, seed=0))
    day = _set(_records(3000, seed=4, brightness=0.48))
    judged = detect_drift(reference, day)
    (brightness,) = [test for test in judged.tests if test.name == "brightness"]
    assert brightness.p_value < judged.threshold and brightness.statistic < brightness.floor
    assert not brightness.drift and not judged.drift
    assert detect_drift(reference, day, effect_floor=False).drift  # the floor made the difference
    # A shift worth an alert clears the floor in the same large window.
    darker = detect_drift(reference, _set(_records(3000, seed=4, brightness=0.35)))
    assert darker.drift and {test.name for test in darker.tests if test.drift} == {"brightness"}


def test_effect_floor_is_the_reference_halves_own_difference():
    rng = np.random.default_rng(0)
    values = rng.normal(size=400)
    floor = half_split_floor(values, ks_statistic)
    # The KS statistic's 95th percentile for two samples of 200: 1.358 * sqrt(2 / 200).
    assert floor == pytest.approx(1.358 * np.sqrt(2 / 200), rel=0.15)
    assert ks_statistic(values[:150], values[150:] + 0.5) == pytest.approx(
        stats.ks_2samp(values[:150], values[150:] + 0.5).statistic
    )
    # The kernel test's floor: two halves of the reference exceed it in about 5 % of splits.
    reference = rng.normal(size=(200, 8))
    _, _, mmd_floor = mmd_test_with_floor(reference, rng.normal(size=(100, 8)), 100)
    halves = [
        mmd_test(reference[order[:100]], reference[order[100:]], 1)[0]
        for order in (rng.permutation(200) for _ in range(200))
    ]
    assert 0.01 <= np.mean(np.array(halves) > mmd_floor) <= 0.12


def test_mmd_p_value_is_uniform_enough_under_no_drift():
    rng = np.random.default_rng(0)
    p_values = [
        mmd_test(rng.normal(size=(60, 8)), rng.normal(size=(40, 8)), 100, seed)[1]
        for seed in range(40)
    ]
    assert 0.02 < np.mean(np.array(p_values) < 0.2) < 0.45  # about 20 % below 0.2
    shifted = mmd_test(rng.normal(size=(60, 8)), rng.normal(0.8, 1, size=(40, 8)), 100)[1]
    assert shifted < 0.02


def _write_log(folder: Path, records: list[dict], garbage: list[str] = ()) -> Path:
    write_records(folder / "2026-11-26" / "predictions-1.jsonl", records)
    with (folder / "2026-11-26" / "predictions-1.jsonl").open("a") as file:
        for line in garbage:
            file.write(line + "\n")
    return folder


def test_drift_cli_writes_report_and_counts_corrupt_lines(tmp_path: Path):
    write_records(tmp_path / "reference.jsonl", _records(200, seed=0))
    logs = _write_log(
        tmp_path / "logs",
        _records(80, seed=5, brightness=0.25),
        garbage=['{"time": "2026-11-26T10:00', "not json", '{"valid": "json, not a record"}'],
    )
    out = tmp_path / "report"
    done = run_cli(
        "-m", "hotdog.monitor", "drift", "--reference", str(tmp_path / "reference.jsonl"),
        "--current", str(logs), "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # drift: a scheduled job can alert on the status
    assert "DRIFT" in done.stdout and "3 unreadable lines skipped" in done.stdout
    summary = json.loads((out / "drift.json").read_text())
    assert summary["drift"] and summary["skipped_lines"] == 3 and summary["current_records"] == 80
    brightness = next(test for test in summary["tests"] if test["name"] == "brightness")
    assert brightness["drift"] and brightness["p_value"] < 1e-6
    assert 0 < brightness["floor"] < brightness["statistic"]  # the floor is reported beside it
    html = (out / "drift.html").read_text()
    assert "<svg" in html and "DRIFT" in html and "brightness" in html


def test_drift_cli_reads_the_service_log_under_a_gs_prefix(tmp_path: Path, gcs_server: str):
    """On Cloud Run the service writes its log as objects under gs://BUCKET/predictions (one
    object per batch); the report reads them where they are, here from the GCS emulator."""
    import os

    import httpx

    write_records(tmp_path / "reference.jsonl", _records(200, seed=0))
    prefix = f"drift-{os.getpid()}/predictions"
    batches = [_records(40, seed=5, brightness=0.25), _records(40, seed=6, brightness=0.25)]
    for number, batch in enumerate(batches):
        write_records(tmp_path / f"batch{number}.jsonl", batch)
        httpx.post(
            f"{gcs_server}/upload/storage/v1/b/hotdog-models/o",
            params={"uploadType": "media", "name": f"{prefix}/2026-11-26/1000{number}-a.jsonl"},
            content=(tmp_path / f"batch{number}.jsonl").read_bytes(),
        ).raise_for_status()
    env = {"STORAGE_EMULATOR_HOST": gcs_server, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}
    reference = str(tmp_path / "reference.jsonl")
    out = tmp_path / "report"
    done = run_cli(
        "-m", "hotdog.monitor", "drift", "--reference", reference,
        "--current", f"gs://hotdog-models/{prefix}", "--out", str(out), env=env,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    summary = json.loads((out / "drift.json").read_text())
    assert summary["drift"] and summary["current_records"] == 80 and summary["skipped_lines"] == 0
    missing = run_cli(
        "-m", "hotdog.monitor", "drift", "--reference", reference,
        "--current", "gs://hotdog-models/no-such-prefix", "--out", str(out), env=env,
    )  # fmt: skip
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "Prediction log gs://hotdog-models/no-such-prefix does not exist; pass" in missing.stderr


def test_drift_cli_on_a_bucket_it_cannot_read_is_one_sentence(tmp_path: Path):
    write_records(tmp_path / "reference.jsonl", _records(50, seed=0))
    with refusing_storage(status=400, message="Invalid bucket name") as url:
        done = run_cli(
            "-m", "hotdog.monitor", "drift", "--reference", str(tmp_path / "reference.jsonl"),
            "--current", "gs://hotdog-models/predictions", "--out", str(tmp_path / "out"),
            env={"STORAGE_EMULATOR_HOST": url, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"},
        )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "Prediction log gs://hotdog-models/predictions cannot be read (" in done.stderr
    assert "check the bucket name and that credentials are available" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("current", "message"),
    [
        ("other-version", "is for model tf_efficientnet_lite0-int8-0123456789ab but the logged"),
        ("empty", "Only 0 readable predictions in the window (2 corrupt lines skipped"),
        ("missing", "Prediction log"),
        ("photo-as-reference", "photo.jpg has no readable records; pass the <model>.reference"),
    ],
)
def test_drift_cli_bad_input_is_one_sentence(tmp_path: Path, current: str, message: str):
    write_records(tmp_path / "reference.jsonl", _records(50, seed=0))
    reference = tmp_path / "reference.jsonl"
    if current == "photo-as-reference":  # a file that holds no records at all
        reference = tmp_path / "photo.jpg"
        reference.write_bytes(next((SAMPLE / "test" / "hot_dog").glob("*.jpg")).read_bytes())
        _write_log(tmp_path / current, _records(30, seed=1))
    if current == "other-version":
        _write_log(tmp_path / current, _records(30, seed=1, version="resnet18-fp32-ffffffffffff"))
    elif current == "empty":
        _write_log(tmp_path / current, [], garbage=["\x00\x01", '{"truncated'])
    done = run_cli(
        "-m", "hotdog.monitor", "drift", "--reference", str(reference),
        "--current", str(tmp_path / current), "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_read_records_survives_a_truncated_last_line(tmp_path: Path):
    write_records(tmp_path / "a.jsonl", _records(5, seed=0))
    data = (tmp_path / "a.jsonl").read_bytes()
    (tmp_path / "a.jsonl").write_bytes(data[:-40])  # a crash mid-write
    records = read_records(tmp_path)
    assert len(records.records) == 4 and records.skipped == 1


# --------------------------------------------------------------- the exported model's side
def test_exported_models_output_the_embedding_in_the_same_pass(exported_model: Path):
    import onnxruntime as ort
    import torch

    from hotdog.core.images import read_image
    from hotdog.core.preprocessing import preprocess_array
    from hotdog.export import EMBEDDING_DIM, ProbabilityModel
    from hotdog.models import load_classifier

    sidecar = json.loads((exported_model / "model.onnx.json").read_text())
    classifier = load_classifier(Path(sidecar["source_checkpoint"]["path"]))
    config = classifier.data_config
    photos = sorted((SAMPLE / "test").rglob("*.jpg"))[::8]
    images = np.stack([preprocess_array(read_image(path), config) for path in photos])
    with torch.inference_mode():
        _, expected = ProbabilityModel(classifier, sidecar["tta_hflip"]).eval()(
            torch.from_numpy(images)
        )
    embeddings = {}
    for name in ("model.onnx", "model.int8.onnx"):
        session = ort.InferenceSession(str(exported_model / name))
        assert [output.name for output in session.get_outputs()] == ["probabilities", "embedding"]
        embeddings[name] = session.run(["embedding"], {"image": images})[0]
        assert embeddings[name].shape == (len(photos), EMBEDDING_DIM)
    scale = np.abs(expected.numpy()).max()
    assert np.abs(embeddings["model.onnx"] - expected.numpy()).max() < 1e-3 * scale
    # int8 rounds activations, more so on this briefly trained 128 px model calibrated on 16
    # photos (cosine to float32 about 0.8 here; 0.92 on average on the full-data export): what
    # drift detection needs is that each image's int8 embedding is still closest to its own.
    fp32, int8 = embeddings["model.onnx"], embeddings["model.int8.onnx"]
    fp32 = fp32 / np.linalg.norm(fp32, axis=1, keepdims=True)
    int8 = int8 / np.linalg.norm(int8, axis=1, keepdims=True)
    similarity = int8 @ fp32.T
    assert (similarity.argmax(axis=1) == np.arange(len(photos))).all()
    assert np.diag(similarity).mean() > 0.7


def test_export_writes_a_reference_profile_of_unseen_photos(exported_model: Path):
    profiles = []
    for name in ("model.onnx", "model.int8.onnx"):
        sidecar = json.loads((exported_model / f"{name}.json").read_text())
        assert sidecar["embedding_name"] == "embedding" and sidecar["embedding_dim"] == 64
        profile = read_records(exported_model / sidecar["reference_profile"])
        # The fixture's data: 20 photos per class in test, a half of each in the reference; no
        # validation photos (Kaggle's train folder is another collection than the traffic's).
        assert len(profile.records) == 20 and profile.skipped == 0
        assert sorted(r["label"] for r in profile.records).count(CLASSES[0]) in range(5, 16)
        assert {r["model_version"] for r in profile.records} == {sidecar["version"]}
        assert all(len(r["embedding"]) == 64 and r["width"] for r in profile.records)
        sources = [r["source"] for r in profile.records]
        assert len(set(sources)) == 20 and all(s.startswith("test/") for s in sources)
        # A matched half: exactly half of each class's 20 photos (pairs split between the halves).
        assert sum(s.startswith(f"test/{CLASSES[0]}/") for s in sources) == 10
        profiles.append(sorted(sources))
    assert profiles[0] == profiles[1]  # both models' profiles hold the same photos


def test_matched_reference_half_covers_each_kind_of_photo():
    # One class of 31 items: 24 of one kind of photo, 7 of another far away. A matched split
    # puts 12 and 3 of them in the reference whatever the seed; a random half would not.
    rng = np.random.default_rng(0)
    features = np.concatenate([rng.normal(0, 1, (24, 5)), rng.normal(20, 1, (7, 5))])
    items = list(range(31))
    halves = set()
    for seed in range(5):
        reference, held_out = split_reference_half(items, [0] * 31, seed, features)
        assert sorted(reference + held_out) == items
        assert len(reference) == 15 and len(held_out) == 16
        assert sum(item >= 24 for item in reference) == 3
        halves.add(tuple(sorted(reference)))
    assert len(halves) == 5  # the seed decides which photo of each pair is the reference's
