"""The prediction log on its own: sinks, batching, drops, flush, retention, live drift gauges."""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from hotdog.core.errors import HotdogError
from hotdog.monitor.prediction_log import Pending, PredictionLog, PredictionLogSettings
from hotdog.monitor.profile import read_records

CLASSES = ["hot_dog", "not_hot_dog"]


def _pending(seed: int = 0, shift: float = 0.0, image: bytes | None = None) -> Pending:
    rng = np.random.default_rng(seed)
    hot = float(rng.uniform(0.6, 1.0))
    return Pending(
        model_version="m-int8-abc",
        probabilities={"hot_dog": hot, "not_hot_dog": 1 - hot},
        statistics={"brightness": 0.5, "contrast": 0.2, "saturation": 0.4, "sharpness": 0.01},
        embedding=(rng.normal(size=8) + shift).tolist(),
        width=640,
        height=480,
        image_format="JPEG",
        latency_ms=12.5,
        image=image,
    )


def _log(settings: PredictionLogSettings, **kwargs) -> tuple[PredictionLog, CollectorRegistry]:
    registry = CollectorRegistry()
    log = PredictionLog(settings, registry=registry, **kwargs)
    return log, registry


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_records_reach_a_local_folder_and_close_flushes_them(tmp_path: Path):
    settings = PredictionLogSettings(location=str(tmp_path), flush_seconds=3600)
    log, registry = _log(settings)
    for seed in range(25):
        log.record(_pending(seed))
    assert not list(tmp_path.rglob("*.jsonl"))  # batched: nothing written before the flush
    log.close()
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    files = list((tmp_path / day).glob("predictions-*.jsonl"))
    assert len(files) == 1
    records = read_records(tmp_path)
    assert len(records.records) == 25 and records.skipped == 0
    record = records.records[0]
    assert record["model_version"] == "m-int8-abc" and record["label"] in CLASSES
    assert record["width"] == 640 and record["latency_ms"] == 12.5 and len(record["embedding"]) == 8
    assert "image" not in record and not (tmp_path / day / "images").exists()
    assert _value(registry, "hotdog_prediction_log_written_total") == 25


def test_images_are_kept_only_when_enabled(tmp_path: Path):
    log, _ = _log(PredictionLogSettings(location=str(tmp_path), keep_images=True))
    log.record(_pending(image=b"\xff\xd8jpeg bytes"))
    log.close()
    (record,) = read_records(tmp_path).records
    stored = next(tmp_path.rglob(record["image"].rsplit("/", 1)[-1]))
    assert stored.read_bytes() == b"\xff\xd8jpeg bytes"


class _BlockedSink:
    """A sink that hangs until released, as a stuck network write would."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lines: list[str] = []

    def write(self, day: str, lines: list[str], images: dict[str, bytes]) -> None:
        self.release.wait(30)
        self.lines += lines

    def delete_days_before(self, day: str) -> None:
        pass


def test_a_full_queue_drops_records_without_blocking_and_counts_them():
    sink = _BlockedSink()
    settings = PredictionLogSettings(location=None, queue_size=5, batch_size=1)
    log, registry = _log(settings, sink=sink)
    started = datetime.now(UTC)
    for seed in range(50):
        log.record(_pending(seed))  # the writer is stuck on the first batch
    assert datetime.now(UTC) - started < timedelta(seconds=1)
    dropped = _value(registry, "hotdog_prediction_log_dropped_total", reason="queue_full")
    assert 40 <= dropped <= 45
    sink.release.set()
    log.close()
    assert len(sink.lines) + dropped == 50


class _FailingSink:
    def write(self, day: str, lines: list[str], images: dict[str, bytes]) -> None:
        raise OSError("No space left on device")

    def delete_days_before(self, day: str) -> None:
        raise OSError("permission denied")


def test_a_failing_sink_counts_drops_and_keeps_going():
    log, registry = _log(PredictionLogSettings(location=None), sink=_FailingSink())
    for seed in range(7):
        log.record(_pending(seed))
    log.close()
    assert _value(registry, "hotdog_prediction_log_dropped_total", reason="sink_error") == 7
    assert log.thread.is_alive() is False


def test_retention_deletes_day_folders_older_than_the_setting(tmp_path: Path):
    today = datetime.now(UTC)
    old, recent = (today - timedelta(days=40)).strftime("%Y-%m-%d"), today.strftime("%Y-%m-%d")
    for day in (old, recent):
        (tmp_path / day).mkdir()
        (tmp_path / day / "predictions-1.jsonl").write_text("")
    (tmp_path / "notes").mkdir()  # not a day folder: left alone
    log, _ = _log(PredictionLogSettings(location=str(tmp_path), retention_days=30))
    log.record(_pending())
    log.close()
    assert not (tmp_path / old).exists()
    assert (tmp_path / recent).exists() and (tmp_path / "notes").exists()


def test_the_writer_computes_the_statistics_the_reference_would_have(tmp_path: Path):
    from dataclasses import replace

    from hotdog.core.preprocessing import DataConfig
    from hotdog.monitor.profile import image_statistics, read_records, thumbnail

    config = DataConfig(input_size=64, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    arrays = np.random.default_rng(0).normal(size=(5, 3, 64, 64)).astype(np.float32)
    log, _ = _log(PredictionLogSettings(location=str(tmp_path)))
    for array in arrays:  # what the service hands over: a thumbnail, no statistics yet
        log.record(
            replace(_pending(), statistics={}, thumbnail=thumbnail(array), data_config=config)
        )
    log.close()
    records = read_records(tmp_path).records
    assert len(records) == 5
    for record, array in zip(records, arrays, strict=True):
        expected = image_statistics(array, config)  # how the export makes the reference's
        assert {name: record[name] for name in expected} == pytest.approx(expected, abs=1e-5)
        assert "thumbnail" not in record


def test_live_gauges_follow_the_window():
    reference = [
        {"probabilities": {"hot_dog": 0.9, "not_hot_dog": 0.1}, "embedding": e.tolist()}
        for e in np.random.default_rng(1).normal(size=(100, 8))
    ]
    settings = PredictionLogSettings(location=None, drift_window=40, drift_interval_seconds=0.01)
    log, registry = _log(settings, reference=reference)
    assert _value(registry, "hotdog_reference_confidence_mean") == pytest.approx(0.9)
    assert _value(registry, "hotdog_drift_p_value") == 1.0
    for seed in range(40):
        log.record(_pending(seed + 100, shift=1.5))
    log.close()
    assert _value(registry, "hotdog_drift_p_value") < 0.01
    # The shift is far larger than two halves of the reference differ: the alert's second term.
    assert _value(registry, "hotdog_drift_mmd") > _value(registry, "hotdog_drift_mmd_floor") > 0
    assert 0.6 < _value(registry, "hotdog_confidence_rolling_mean") < 1.0


def test_gs_prefix_gets_one_object_per_batch(gcs_server: str, monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server)
    monkeypatch.setenv("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    import fsspec

    prefix = f"gs://hotdog-models/predictions-{os.getpid()}"
    log, registry = _log(PredictionLogSettings(location=prefix, batch_size=10, flush_seconds=3600))
    for seed in range(25):
        log.record(_pending(seed))
    log.close()
    fs = fsspec.filesystem("gs", skip_instance_cache=True)
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    objects = sorted(fs.ls(f"{prefix}/{day}", detail=False))
    assert len(objects) == 3  # 10 + 10 + the 5 flushed at close
    lines = [line for name in objects for line in fs.cat(name).decode().splitlines()]
    assert len(lines) == 25 and all(
        json.loads(line)["model_version"] == "m-int8-abc" for line in lines
    )
    assert _value(registry, "hotdog_prediction_log_written_total") == 25


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"HOTDOG_PREDICTION_LOG_QUEUE": "many"}, "HOTDOG_PREDICTION_LOG_QUEUE='many' is not a"),
        ({"HOTDOG_DRIFT_WINDOW": "0"}, "HOTDOG_DRIFT_WINDOW='0' is not a positive int"),
        ({"HOTDOG_PREDICTION_LOG_IMAGES": "maybe"}, "must be true or false"),
    ],
)
def test_bad_settings_are_one_sentence(environ: dict[str, str], message: str):
    with pytest.raises(HotdogError, match=message.replace("(", r"\(")):
        PredictionLogSettings.from_env(environ)


def test_settings_default_to_a_local_folder_and_can_be_turned_off():
    assert PredictionLogSettings.from_env({}).location == "logs/predictions"
    assert PredictionLogSettings.from_env({"HOTDOG_PREDICTION_LOG": "off"}).location is None


# --------------------------------------------------------------- in the running service
def test_the_service_logs_every_prediction_and_flushes_at_shutdown(
    exported_model: Path, tmp_path: Path
):
    import httpx

    from tests.conftest import SAMPLE, running_server

    model = exported_model / "model.int8.onnx"
    sidecar = json.loads((exported_model / "model.int8.onnx.json").read_text())
    env = {
        "HOTDOG_MODEL_URI": str(model),
        "HOTDOG_PREDICTION_LOG": str(tmp_path / "log"),
        "HOTDOG_PREDICTION_LOG_FLUSH_SECONDS": "3600",  # only the shutdown writes
    }
    photos = sorted((SAMPLE / "test").rglob("*.jpg"))[:4]
    with running_server(env) as url:
        for path in photos[:2]:
            assert httpx.post(f"{url}/predict", files={"file": path.open("rb")}).is_success
        batch = [("files", path.open("rb")) for path in photos[2:]]
        batch.append(("files", ("broken.jpg", b"\xff\xd8 not a jpeg", "image/jpeg")))
        assert httpx.post(f"{url}/predict/batch", files=batch).is_success
        metrics = httpx.get(f"{url}/metrics").text
        assert "hotdog_prediction_log_queue" in metrics
        for reason in ("queue_full", "sink_error"):
            assert f'hotdog_prediction_log_dropped_total{{reason="{reason}"}} 0.0' in metrics
    records = read_records(tmp_path / "log")
    assert len(records.records) == 4 and records.skipped == 0  # the refused upload is not logged
    from PIL import Image

    sizes = {Image.open(path).size for path in photos}
    for record in records.records:
        assert record["model_version"] == sidecar["version"]
        assert len(record["embedding"]) == sidecar["embedding_dim"]
        assert (record["width"], record["height"]) in sizes and record["format"] == "JPEG"
        assert 0 <= record["brightness"] <= 1 and record["latency_ms"] > 0


def test_the_service_refuses_a_bad_log_setting_in_one_sentence(exported_model: Path):
    from tests.conftest import run_cli

    env = {
        "HOTDOG_MODEL_URI": str(exported_model / "model.int8.onnx"),
        "HOTDOG_PREDICTION_LOG_QUEUE": "lots",
        "HOTDOG_PORT": "0",
    }
    done = run_cli("-m", "hotdog.serve", env=env, timeout=60)
    assert done.returncode == 2
    assert "HOTDOG_PREDICTION_LOG_QUEUE='lots' is not a positive int" in done.stderr
    assert "Traceback" not in done.stderr
