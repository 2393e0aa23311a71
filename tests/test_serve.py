"""The inference service on a real uvicorn on 127.0.0.1: answers, bad input, metrics, loading."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from hotdog.core.artifact import ArtifactError, ModelMetadata
from hotdog.serve.settings import Settings, SettingsError
from tests.conftest import (
    SAMPLE,
    SERVER_PIDS,
    copy_export_with_threshold,
    free_port,
    refusing_storage,
    run_cli,
    running_server,
)

HOT_DOGS = sorted((SAMPLE / "test" / "hot_dog").glob("*.jpg"))
NOT_HOT_DOGS = sorted((SAMPLE / "test" / "not_hot_dog").glob("*.jpg"))
# One prediction (the Vertex route's), and /predict's answer around it.
PREDICTION_KEYS = {"label", "probability", "probabilities", "unsure"}
PREDICT_ANSWER_KEYS = PREDICTION_KEYS | {"model_version", "inference_ms"}


def _jpeg_bytes(path: Path = HOT_DOGS[0]) -> bytes:
    return path.read_bytes()


def _encoded(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def _rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1))


def test_predict_answers_label_probabilities_version_and_time(live_server: str):
    model = httpx.get(f"{live_server}/model").json()
    answer = httpx.post(
        f"{live_server}/predict", files={"file": ("dog.jpg", _jpeg_bytes(), "image/jpeg")}
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == PREDICT_ANSWER_KEYS
    assert list(body["probabilities"]) == model["class_names"] == ["hot_dog", "not_hot_dog"]
    assert sum(body["probabilities"].values()) == pytest.approx(1, abs=1e-3)
    assert body["probability"] == max(body["probabilities"].values())
    assert body["label"] == max(body["probabilities"], key=body["probabilities"].get)
    assert body["model_version"] == model["version"] and model["precision"] == "int8"
    assert body["unsure"] == (body["probability"] < model["unsure_below"])
    assert 0 < body["inference_ms"] < 10_000


def test_service_agrees_with_the_exported_model(live_server: str, exported_model: Path):
    """Same probabilities as running the int8 ONNX file directly on the same preprocessing."""
    import onnxruntime as ort

    from hotdog.core.images import read_image
    from hotdog.core.preprocessing import DataConfig, preprocess_array

    sidecar = json.loads((exported_model / "model.int8.onnx.json").read_text())
    config = DataConfig.from_dict(sidecar["data_config"])
    session = ort.InferenceSession(str(exported_model / "model.int8.onnx"))
    photos = HOT_DOGS[:3] + NOT_HOT_DOGS[:3]
    images = np.stack([preprocess_array(read_image(path), config) for path in photos])
    expected = session.run(None, {"image": images})[0]
    for photo, row in zip(photos, expected, strict=True):
        body = httpx.post(f"{live_server}/predict", files={"file": photo.open("rb")}).json()
        assert body["probabilities"]["hot_dog"] == pytest.approx(float(row[0]), abs=1e-4)


def test_batch_classifies_each_file_and_reports_the_bad_one(live_server: str):
    files = [
        ("files", ("a.jpg", _jpeg_bytes(HOT_DOGS[1]), "image/jpeg")),
        ("files", ("notes.jpg", b"not an image at all", "image/jpeg")),
        ("files", ("b.jpg", _jpeg_bytes(NOT_HOT_DOGS[0]), "image/jpeg")),
    ]
    answer = httpx.post(f"{live_server}/predict/batch", files=files)
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [result["file"] for result in results] == ["a.jpg", "notes.jpg", "b.jpg"]
    assert results[1]["status"] == 415 and "not an image" in results[1]["error"]
    single = httpx.post(f"{live_server}/predict", files={"file": HOT_DOGS[1].open("rb")}).json()
    assert results[0]["probabilities"]["hot_dog"] == pytest.approx(
        single["probabilities"]["hot_dog"], abs=1e-4
    )
    assert results[2]["label"] in {"hot_dog", "not_hot_dog"}


def _bomb() -> bytes:
    """A PNG of a few kB that claims 400 million pixels."""
    return _encoded(Image.new("1", (20_000, 20_000)), "PNG", optimize=True)


BAD_UPLOADS = {
    "empty body": ({"content": b""}, 400, "body is empty"),
    "not a form": ({"json": {"image": "x"}}, 415, "multipart/form-data"),
    "wrong field name": ({"files": {"image": ("a.jpg", b"x")}}, 400, "No file in the field 'file'"),
    "empty file": ({"files": {"file": ("a.jpg", b"")}}, 400, "a.jpg is empty"),
    "non-image bytes": ({"files": {"file": ("a.jpg", b"hello " * 100)}}, 415, "not an image"),
    "truncated JPEG": (
        {"files": {"file": ("cut.jpg", _jpeg_bytes()[:4000])}},
        422,
        "cut.jpg is corrupt or truncated",
    ),
    "unsupported format": (
        {"files": {"file": ("a.ppm", _encoded(Image.new("RGB", (64, 64)), "PPM"))}},
        415,
        "is a PPM image, which is not accepted",
    ),
    "decompression bomb": (
        {"files": {"file": ("bomb.png", _bomb())}},
        422,
        "bomb.png has too many pixels to be decoded safely",
    ),
    "two files on /predict": (
        {"files": [("file", ("a.jpg", _jpeg_bytes())), ("file", ("b.jpg", _jpeg_bytes()))]},
        400,
        "2 files sent to /predict, which classifies one",
    ),
}


@pytest.mark.parametrize("case", BAD_UPLOADS, ids=list(BAD_UPLOADS))
def test_bad_uploads_get_a_4xx_sentence_and_the_server_keeps_serving(live_server: str, case):
    request, status, message = BAD_UPLOADS[case]
    answer = httpx.post(f"{live_server}/predict", **request)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    error = answer.json()["error"]
    assert message in error and error.endswith(".") and "\n" not in error
    good = httpx.post(f"{live_server}/predict", files={"file": HOT_DOGS[0].open("rb")})
    assert good.status_code == 200


def test_limits_payload_batch_size_and_pixels(exported_model: Path):
    env = {
        "HOTDOG_MODEL_URI": str(exported_model / "model.int8.onnx"),
        "HOTDOG_MAX_PAYLOAD_BYTES": "100000",
        "HOTDOG_MAX_BATCH": "2",
        "HOTDOG_MAX_PIXELS": "100000",
    }
    with running_server(env) as url:
        big = _encoded(Image.effect_noise((400, 400), 60).convert("RGB"), "PNG")
        assert len(big) > 100_000
        answer = httpx.post(f"{url}/predict", files={"file": ("big.png", big)})
        assert answer.status_code == 413 and "limit of 100,000 bytes" in answer.json()["error"]

        def chunks():  # no Content-Length: the limit must hold while the body streams in
            for start in range(0, len(big), 8192):
                yield big[start : start + 8192]

        answer = httpx.post(
            f"{url}/predict", content=chunks(), headers={"content-type": "multipart/form-data"}
        )
        assert answer.status_code == 413, answer.text

        three = [("files", (f"{i}.jpg", _jpeg_bytes(HOT_DOGS[i]))) for i in range(3)]
        answer = httpx.post(f"{url}/predict/batch", files=three)
        assert answer.status_code == 413 and "more than the limit of 2" in answer.json()["error"]
        answer = httpx.post(f"{url}/predict/batch", files=three[:2])
        assert answer.status_code == 200 and len(answer.json()["results"]) == 2

        wide = _encoded(Image.new("RGB", (500, 300)), "JPEG")
        answer = httpx.post(f"{url}/predict", files={"file": ("wide.jpg", wide)})
        assert answer.status_code == 422 and "limit of 100,000" in answer.json()["error"]
        limits = httpx.get(f"{url}/model").json()["limits"]
        assert limits == {
            "max_payload_bytes": 100000,
            "vertex_max_payload_bytes": 1_500_000,
            "max_pixels": 100000,
            "max_batch": 2,
            "timeout_s": 10.0,
        }


def test_memory_stays_bounded_under_hostile_uploads(exported_model: Path):
    env = {"HOTDOG_MODEL_URI": str(exported_model / "model.int8.onnx")}
    with running_server(env) as url:
        pid = SERVER_PIDS[url]
        photo = {"file": ("a.jpg", _jpeg_bytes())}
        for _ in range(5):
            httpx.post(f"{url}/predict", files=photo)
        before = _rss_kib(pid)
        hostile = [
            {"files": {"file": ("bomb.png", _bomb())}},
            {"content": b"x" * (11 * 1024 * 1024), "headers": {"content-type": "image/jpeg"}},
            {"files": {"file": ("cut.jpg", _jpeg_bytes()[:4000])}},
        ]
        with httpx.Client(timeout=30) as client:
            for _ in range(10):
                for request in hostile:
                    assert client.post(f"{url}/predict", **request).status_code in {413, 422}
                assert client.post(f"{url}/predict", files=photo).status_code == 200
        growth_mib = (_rss_kib(pid) - before) / 1024
        assert growth_mib < 60, f"RSS grew by {growth_mib:.0f} MiB"


def test_metrics_count_requests_predictions_and_refusals(live_server: str):
    httpx.post(f"{live_server}/predict", files={"file": HOT_DOGS[2].open("rb")})
    httpx.post(f"{live_server}/predict", files={"file": ("x.jpg", b"junk")})
    text = httpx.get(f"{live_server}/metrics").text

    def value(pattern: str) -> float:
        found = re.search(rf"^{pattern} ([0-9.e+]+)$", text, re.MULTILINE)
        assert found, f"no {pattern} in /metrics"
        return float(found.group(1))

    assert value(r'hotdog_http_requests_total\{method="POST",route="/predict",status="200"\}') >= 1
    assert value(r'hotdog_http_requests_total\{method="POST",route="/predict",status="415"\}') >= 1
    assert (
        value(r'hotdog_http_request_duration_seconds_count\{route="/predict",status="200"\}') >= 1
    )
    predictions = sum(
        float(v) for v in re.findall(r'^hotdog_predictions_total\{label="\w+"\} (\S+)$', text, re.M)
    )
    assert predictions >= 1
    assert value("hotdog_prediction_confidence_count") == predictions
    assert value(r'hotdog_rejected_uploads_total\{reason="unsupported"\}') >= 1
    assert 0 < value("hotdog_model_load_seconds") < 60
    assert value("hotdog_http_requests_in_flight") == 1  # this very request
    assert value("hotdog_request_body_bytes_held") == 0  # no upload under way
    assert re.search(r'^hotdog_model_info\{.*precision="int8".*\} 1\.0$', text, re.M)


def test_health_ready_model_and_unknown_routes(live_server: str):
    assert httpx.get(f"{live_server}/health").json() == {"status": "ok"}
    ready = httpx.get(f"{live_server}/ready").json()
    model = httpx.get(f"{live_server}/model").json()
    assert ready == {"status": "ready", "model_version": model["version"]}
    assert model["backend"] == "onnx" and model["data_config"]["input_size"] > 0
    assert 0.5 <= model["test_accuracy"] <= 1
    missing = httpx.get(f"{live_server}/nothing-here")
    assert missing.status_code == 404 and "There is no /nothing-here" in missing.json()["error"]
    wrong_method = httpx.get(f"{live_server}/predict")
    assert wrong_method.status_code == 405 and "GET is not allowed" in wrong_method.json()["error"]


def test_a_timeout_is_a_503_sentence(exported_model: Path):
    env = {"HOTDOG_MODEL_URI": str(exported_model / "model.int8.onnx"), "HOTDOG_TIMEOUT_S": "1e-6"}
    with running_server(env) as url:
        answer = httpx.post(f"{url}/predict", files={"file": HOT_DOGS[0].open("rb")})
        assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
        assert "did not answer within" in answer.json()["error"]
        assert httpx.get(f"{url}/health").status_code == 200


def test_torch_predictor_matches_the_exported_model(trained_run: Path, exported_model: Path):
    from hotdog.core.images import read_image
    from hotdog.core.preprocessing import preprocess_array
    from hotdog.serve.predictors import OnnxPredictor, TorchPredictor

    torch_predictor = TorchPredictor(
        Settings(backend="torch", model_uri=str(trained_run / "checkpoints" / "best.ckpt"))
    )
    onnx_predictor = OnnxPredictor(Settings(model_uri=str(exported_model / "model.onnx")))
    checkpoint, export = torch_predictor.metadata.inference, onnx_predictor.metadata.inference
    # The same facts, but the unsure threshold: training fitted it in bfloat16, export refits it
    # for the float32 model.
    assert replace(checkpoint, unsure_below=0) == replace(export, unsure_below=0)
    assert checkpoint.unsure_below == pytest.approx(export.unsure_below, abs=0.05)
    config = onnx_predictor.metadata.inference.data_config
    batch = np.stack([preprocess_array(read_image(path), config) for path in HOT_DOGS[:2]])
    np.testing.assert_allclose(
        torch_predictor.predict(batch), onnx_predictor.predict(batch), atol=1e-4
    )


@pytest.mark.slow  # a server process that imports PyTorch; the test above checks the predictor
def test_torch_backend_serves_the_checkpoint(trained_run: Path, exported_model: Path):
    env = {
        "HOTDOG_BACKEND": "torch",
        "HOTDOG_MODEL_URI": str(trained_run / "checkpoints" / "best.ckpt"),
    }
    with running_server(env) as url:
        body = httpx.post(f"{url}/predict", files={"file": HOT_DOGS[0].open("rb")}).json()
        assert httpx.get(f"{url}/model").json()["backend"] == "torch"
    with running_server({"HOTDOG_MODEL_URI": str(exported_model / "model.onnx")}) as url:
        fp32 = httpx.post(f"{url}/predict", files={"file": HOT_DOGS[0].open("rb")}).json()
    assert body["probabilities"]["hot_dog"] == pytest.approx(
        fp32["probabilities"]["hot_dog"], abs=1e-4
    )


def test_model_from_gs_uri_is_verified(exported_model: Path, gcs_server: str):
    env = {
        "HOTDOG_MODEL_URI": "gs://hotdog-models/serve/model.int8.onnx",
        "STORAGE_EMULATOR_HOST": gcs_server,
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
    }
    _upload(gcs_server, exported_model / "model.int8.onnx", "serve/model.int8.onnx")
    _upload(gcs_server, exported_model / "model.int8.onnx.json", "serve/model.int8.onnx.json")
    with running_server(env) as url:
        model = httpx.get(f"{url}/model").json()
        assert model["model_uri"].startswith("gs://") and model["precision"] == "int8"
        assert httpx.post(f"{url}/predict", files={"file": HOT_DOGS[0].open("rb")}).is_success

    # A sidecar that does not match the model: refused, in one sentence, and the process exits.
    _upload(gcs_server, exported_model / "model.onnx.json", "serve/model.int8.onnx.json")
    done = run_cli("-m", "hotdog.serve", env={**env, "HOTDOG_PORT": "0"}, timeout=60)
    assert done.returncode == 1
    assert "but its sidecar expects" in done.stderr and "copy both files again" in done.stderr


def _upload(emulator: str, path: Path, name: str) -> None:
    answer = httpx.post(
        f"{emulator}/upload/storage/v1/b/hotdog-models/o",
        params={"uploadType": "media", "name": name},
        content=path.read_bytes(),
    )
    answer.raise_for_status()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"HOTDOG_MODEL_URI": "no/such/model.onnx"}, "no/such/model.onnx does not exist"),
        ({"HOTDOG_PORT": "eighty"}, "HOTDOG_PORT='eighty' is not a valid int"),
        ({"HOTDOG_BACKEND": "tensorflow"}, "is not a backend; use 'onnx' or 'torch'"),
        ({"AIP_PREDICT_ROUTE": "predict"}, "AIP_PREDICT_ROUTE='predict' must be a path starting"),
        ({"HOTDOG_WORKERS": "2"}, "HOTDOG_WORKERS=2 is not supported: the service runs one"),
        (
            {"AIP_STORAGE_URI": "no/such/folder"},
            "AIP_STORAGE_URI=no/such/folder is set, so the model is read from no/such/folder/",
        ),
        ({"HOTDOG_MODEL_URI": "runs/x/best.ckpt"}, "is a training checkpoint, not an exported"),
        ({"HOTDOG_PORT": "99999"}, "Port 99999 (HOTDOG_PORT, AIP_HTTP_PORT or PORT) is not a TCP"),
        ({"HOTDOG_LOG_LEVEL": "loud"}, "HOTDOG_LOG_LEVEL='loud' is not a log level; use one of"),
        ({"HOTDOG_TIMEOUT_S": "nan"}, "HOTDOG_TIMEOUT_S=nan must be a positive number."),
        ({"HOTDOG_SHUTDOWN_GRACE_S": "-1"}, "HOTDOG_SHUTDOWN_GRACE_S=-1.0 must be 0 or more"),
        ({"HOTDOG_HOST": "no.such.host.invalid"}, "cannot be resolved to an address; use 0.0.0.0"),
        ({"HOTDOG_DRIFT_INTERVAL_SECONDS": "nan"}, "HOTDOG_DRIFT_INTERVAL_SECONDS='nan' is not a"),
        (
            {"HOTDOG_PREDICTION_LOG": "pyproject.toml"},
            "pyproject.toml is a file; set it to a folder, a gs:// prefix or off.",
        ),
        (
            {"HOTDOG_BACKEND": "torch", "HOTDOG_MODEL_URI": "models/export/model.int8.onnx"},
            "models/export/model.int8.onnx is an exported ONNX model, not a checkpoint; serve it",
        ),
    ],
)
def test_start_up_errors_are_one_sentence(env: dict[str, str], message: str):
    done = run_cli("-m", "hotdog.serve", env={"HOTDOG_PORT": "0", **env}, timeout=60)
    assert done.returncode in {1, 2}
    assert message in done.stderr and "Traceback" not in done.stderr


def test_refused_gs_model_is_one_sentence_without_gcsfs_tracebacks():
    """A storage API that refuses the read gets the service's one sentence; gcsfs logs such a
    refusal with its traceback, which stays out of it."""
    with refusing_storage(message="Invalid bucket name") as url:
        done = run_cli(
            "-m",
            "hotdog.serve",
            env={
                "HOTDOG_PORT": "0",
                "HOTDOG_MODEL_URI": "gs://hotdog-models/serve/model.int8.onnx",
                "STORAGE_EMULATOR_HOST": url,
            },
            timeout=60,
        )
    assert done.returncode == 1
    assert "gs://hotdog-models/serve/model.int8.onnx cannot be read (" in done.stderr
    assert "(HttpError: Invalid bucket name" in done.stderr
    assert "Traceback" not in done.stderr


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch):
    assert Settings.from_env() == Settings()
    for name, value in {"HOTDOG_THREADS": "1", "PORT": "9000", "HOTDOG_ACCESS_LOG": "yes"}.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    assert (settings.threads, settings.port, settings.access_log) == (1, 9000, True)
    monkeypatch.setenv("AIP_HTTP_PORT", "8080")  # Vertex's port wins over Cloud Run's
    assert Settings.from_env().port == 8080
    monkeypatch.setenv("HOTDOG_PORT", "7000")  # and the service's own over both
    assert Settings.from_env().port == 7000
    monkeypatch.setenv("HOTDOG_LOG_LEVEL", "WARNING")  # any case; uvicorn wants lower case
    assert Settings.from_env().log_level == "warning"
    monkeypatch.setenv("HOTDOG_PORT", "0")  # any free port
    assert Settings.from_env().port == 0
    monkeypatch.setenv("HOTDOG_MAX_BATCH", "0")
    with pytest.raises(SettingsError, match="HOTDOG_MAX_BATCH=0 must be a positive number"):
        Settings.from_env()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "is not a model sidecar (it is malformed)"),
        ('{"class_names": ["a", "b"]}', "is not a model sidecar (it lacks the key 'backbone')"),
    ],
)
def test_a_broken_sidecar_is_one_sentence(text: str, message: str):
    with pytest.raises(ArtifactError) as caught:
        ModelMetadata.from_json(text, source="gs://bucket/model.onnx.json")
    assert str(caught.value).startswith(f"gs://bucket/model.onnx.json {message}")
    assert str(caught.value).count(". ") == 0 and str(caught.value).endswith("hotdog.export.")


def test_the_onnx_service_does_not_import_torch(exported_model: Path):
    code = (
        "import sys\n"
        "import hotdog.core.artifact, hotdog.core.dataset, hotdog.core.errors\n"
        "import hotdog.core.images, hotdog.core.preprocessing\n"
        "from fastapi.testclient import TestClient\n"
        "from hotdog.serve.app import create_app\n"
        "from hotdog.serve.settings import Settings\n"
        f"app = create_app(Settings(model_uri={str(exported_model / 'model.int8.onnx')!r}))\n"
        "with TestClient(app) as client:\n"
        "    import time\n"
        "    while client.get('/ready').status_code != 200: time.sleep(0.05)\n"
        f"    assert client.post('/predict', files={{'file': open({str(HOT_DOGS[0])!r}, 'rb')}})"
        ".status_code == 200\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'lightning'}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


# ------------------------------------------------------------------ Vertex AI / KServe v1
VERTEX_PREDICT = "/v1/models/hotdog:predict"
JSON = {"content-type": "application/json"}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_vertex_route_answers_each_instance_in_order(live_server: str):
    instances = [
        {"b64": _b64(_jpeg_bytes(HOT_DOGS[0]))},
        {"b64": "not base64 at all!"},
        {"image": "no b64 key"},
        {"b64": _b64(b"plain text, not an image " * 10)},
        {"b64": _b64(_jpeg_bytes(NOT_HOT_DOGS[0]))},
    ]
    answer = httpx.post(
        f"{live_server}{VERTEX_PREDICT}", json={"instances": instances, "parameters": {"x": 1}}
    )
    assert answer.status_code == 200, answer.text
    assert set(answer.json()) == {"predictions"}
    first, bad_base64, no_b64, not_image, last = answer.json()["predictions"]
    single = httpx.post(f"{live_server}/predict", files={"file": HOT_DOGS[0].open("rb")}).json()
    assert first["label"] == single["label"]
    assert first["probabilities"]["hot_dog"] == pytest.approx(
        single["probabilities"]["hot_dog"], abs=1e-4
    )
    assert bad_base64["status"] == 400 and "instance 1's 'b64' is not valid base64" in (
        bad_base64["error"].lower()
    )
    assert no_b64["status"] == 400 and "Instance 2 has no 'b64' string" in no_b64["error"]
    assert not_image["status"] == 415 and "instance 3 is not an image" in not_image["error"]
    assert set(last) == PREDICTION_KEYS
    for refused in (bad_base64, no_b64, not_image):
        assert refused["error"].endswith(".") and "\n" not in refused["error"]


VERTEX_BAD_REQUESTS = {
    "malformed JSON": ({"content": b'{"instances": [', "headers": JSON}, 400, "not valid JSON"),
    "no instances key": ({"json": {"inputs": []}}, 400, "has no 'instances' key"),
    "instances not a list": ({"json": {"instances": "x"}}, 400, "must be a non-empty list"),
    "no instances": ({"json": {"instances": []}}, 400, "must be a non-empty list"),
    "too many instances": (
        {"json": {"instances": [{"b64": "AAAA"}] * 17}},
        413,
        "17 instances in one request, more than the limit of 16",
    ),
    "over Vertex's 1.5 MB": (
        {"json": {"instances": [{"b64": "A" * 1_600_000}]}},
        413,
        "more than the limit of 1,500,000 bytes",
    ),
}


@pytest.mark.parametrize("case", VERTEX_BAD_REQUESTS, ids=list(VERTEX_BAD_REQUESTS))
def test_vertex_bad_requests_get_one_sentence(live_server: str, case: str):
    request, status, message = VERTEX_BAD_REQUESTS[case]
    answer = httpx.post(f"{live_server}{VERTEX_PREDICT}", **request)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert message in error and error.endswith(".") and "\n" not in error
    good = {"instances": [{"b64": _b64(_jpeg_bytes())}]}
    assert httpx.post(f"{live_server}{VERTEX_PREDICT}", json=good).status_code == 200


def test_vertex_cap_leaves_the_multipart_limit_alone(live_server: str):
    big = _encoded(Image.effect_noise((900, 900), 60).convert("RGB"), "PNG")
    assert len(big) > 1_500_000
    answer = httpx.post(f"{live_server}/predict", files={"file": ("big.png", big)})
    assert answer.status_code == 200, answer.text


def test_answers_below_the_models_threshold_are_unsure(
    live_server: str, exported_model: Path, tmp_path: Path
):
    """The threshold comes from the sidecar (export refits it for each model); every route and
    /model say it. With a threshold between two photos' probabilities, the less sure one is
    answered unsure, with its best guess, and the others are not."""
    trained = json.loads((exported_model / "model.int8.onnx.json").read_text())["unsure_below"]
    assert 0.5 < trained < 1.0  # fitted on the tiny run's validation split
    photos = HOT_DOGS[:2] + NOT_HOT_DOGS[:2]
    answers = [
        httpx.post(f"{live_server}/predict", files={"file": p.open("rb")}).json() for p in photos
    ]
    ranked = sorted(range(len(photos)), key=lambda i: answers[i]["probability"])
    least, next_least = (answers[i]["probability"] for i in ranked[:2])
    assert least < next_least
    model = copy_export_with_threshold(exported_model, tmp_path, (least + next_least) / 2)
    with running_server({"HOTDOG_MODEL_URI": str(model)}) as url:
        assert httpx.get(f"{url}/model").json()["unsure_below"] == (least + next_least) / 2
        batch = httpx.post(
            f"{url}/predict/batch", files=[("files", p.open("rb")) for p in photos]
        ).json()
        flags = [r["unsure"] for r in batch["results"]]
        assert flags == [i == ranked[0] for i in range(len(photos))]
        assert [r["label"] for r in batch["results"]] == [a["label"] for a in answers]
        for index in ranked[:2]:  # the least sure photo, then the next
            body = {"instances": [{"b64": _b64(_jpeg_bytes(photos[index]))}]}
            vertex = httpx.post(f"{url}{VERTEX_PREDICT}", json=body).json()
            assert vertex["predictions"][0]["unsure"] is (index == ranked[0])
        metrics = httpx.get(f"{url}/metrics").text
        assert re.search(r"^hotdog_unsure_predictions_total 2\.0$", metrics, re.MULTILINE)


def test_health_route_follows_readiness(live_server: str):
    answer = httpx.get(f"{live_server}/v1/models/hotdog")
    assert answer.status_code == 200 and answer.json()["status"] == "ready"


def test_openapi_describes_predict_and_the_vertex_route(live_server: str):
    spec = httpx.get(f"{live_server}/openapi.json").json()
    schemas = spec["components"]["schemas"]

    def resolved(schema: dict) -> dict:
        return schemas[schema["$ref"].rsplit("/", 1)[1]] if "$ref" in schema else schema

    predict = spec["paths"]["/predict"]["post"]
    answer = resolved(predict["responses"]["200"]["content"]["application/json"]["schema"])
    assert set(answer["properties"]) == PREDICT_ANSWER_KEYS
    upload = predict["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert upload["properties"]["file"]["format"] == "binary"
    for status in ("400", "413", "415", "422", "503"):
        error = resolved(predict["responses"][status]["content"]["application/json"]["schema"])
        assert set(error["properties"]) == {"error"}

    vertex = spec["paths"][VERTEX_PREDICT]["post"]
    body = vertex["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["instances"]
    answer = resolved(vertex["responses"]["200"]["content"]["application/json"]["schema"])
    assert answer["properties"]["predictions"]["type"] == "array"
    assert "/v1/models/hotdog" in spec["paths"] and "/model" in spec["paths"]


def test_serves_in_the_environment_vertex_sets(exported_model: Path, gcs_server: str):
    """Exactly the variables Vertex AI sets for a custom container (its documentation's list),
    the model from AIP_STORAGE_URI (a gs:// folder, here the GCS emulator); no HOTDOG_*."""
    for name in ("model.int8.onnx", "model.int8.onnx.json"):
        _upload(gcs_server, exported_model / name, f"vertex-copy/artifacts/{name}")
    port = free_port()
    endpoint, deployed = "1234567890", "9876543210"
    vertex_env = {
        "AIP_MODE": "PREDICTION",
        "AIP_MODE_VERSION": "1.0.0",
        "AIP_FRAMEWORK": "CUSTOM_CONTAINER",
        "AIP_HTTP_PORT": str(port),
        "AIP_HEALTH_ROUTE": f"/v1/endpoints/{endpoint}/deployedModels/{deployed}",
        "AIP_PREDICT_ROUTE": f"/v1/endpoints/{endpoint}/deployedModels/{deployed}:predict",
        "AIP_STORAGE_URI": "gs://hotdog-models/vertex-copy/artifacts",
        "AIP_ENDPOINT_ID": endpoint,
        "AIP_DEPLOYED_MODEL_ID": deployed,
        "AIP_MODEL_NAME": endpoint,
        "AIP_VERSION_NAME": deployed,
        "AIP_PROJECT_NUMBER": "123456789012",
        "AIP_MACHINE_TYPE": "n1-standard-2",
    }
    emulator = {"STORAGE_EMULATOR_HOST": gcs_server, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}
    base = {name: value for name, value in os.environ.items() if not name.startswith("HOTDOG_")}
    server = subprocess.Popen(
        [sys.executable, "-m", "hotdog.serve"],
        env={**base, **emulator, **vertex_env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        health = _wait_for(f"{url}{vertex_env['AIP_HEALTH_ROUTE']}", server)
        assert health.json()["status"] == "ready"
        instances = [{"b64": _b64(_jpeg_bytes(path))} for path in (HOT_DOGS[0], NOT_HOT_DOGS[0])]
        answer = httpx.post(
            f"{url}{vertex_env['AIP_PREDICT_ROUTE']}", json={"instances": instances}
        )
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["predictions"]) == 2
        model = httpx.get(f"{url}/model").json()
        assert model["model_uri"] == "gs://hotdog-models/vertex-copy/artifacts/model.int8.onnx"
    finally:
        server.terminate()
        assert server.wait(15) == 0


def _wait_for(url: str, server: subprocess.Popen, timeout: float = 60) -> httpx.Response:
    """The first 200 answer from ``url``; earlier answers must be 503 (loading)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, "the server exited"
        try:
            answer = httpx.get(url, timeout=1)
        except httpx.TransportError:
            time.sleep(0.1)
            continue
        if answer.status_code == 200:
            return answer
        assert answer.status_code == 503, answer.text
        time.sleep(0.1)
    raise AssertionError(f"{url} was not ready after {timeout} s")


# ------------------------------------------------------------------ slow clients and shutdown
def _start_server(env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """``python -m hotdog.serve`` on 127.0.0.1 with ``env``, ready; the process and its URL."""
    port = free_port()
    base = {name: value for name, value in os.environ.items() if not name.startswith("HOTDOG_")}
    server = subprocess.Popen(
        [sys.executable, "-m", "hotdog.serve"],
        env={**base, "HOTDOG_HOST": "127.0.0.1", "HOTDOG_PORT": str(port), **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    _wait_for(f"{url}/ready", server)
    return server, url


def _multipart_head(url: str, size: int) -> bytes:
    """Request line and headers of a ``POST /predict`` declaring a ``size``-byte form body."""
    host = url.removeprefix("http://")
    return (
        f"POST /predict HTTP/1.1\r\nHost: {host}\r\n"
        "Content-Type: multipart/form-data; boundary=stall\r\n"
        f"Content-Length: {size}\r\n\r\n"
    ).encode()


def _photo_form(photo: bytes) -> bytes:
    return (
        b'--stall\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + photo + b"\r\n--stall--\r\n"
    )


def _stall(url: str, declared: int, sent: int) -> socket.socket:
    """A client that declares ``declared`` bytes of body, sends ``sent`` of them and stalls."""
    host, port = url.removeprefix("http://").split(":")
    client = socket.create_connection((host, int(port)))
    client.sendall(_multipart_head(url, declared) + b"x" * sent)
    return client


def _answer_of(client: socket.socket, timeout: float) -> str:
    """What the server sent back on ``client`` until it closed it or ``timeout`` passed."""
    client.settimeout(timeout)
    received = b""
    try:
        while chunk := client.recv(65536):
            received += chunk
            if b"\r\n\r\n" in received and b"connection: close" not in received.lower():
                break  # a keep-alive answer: stop at its end (short bodies come in one piece)
    except (TimeoutError, ConnectionError):
        pass
    return received.decode("latin-1")


def test_stalled_uploads_stay_within_the_memory_budget(exported_model: Path):
    """40 clients each stall after 2.5 MB of a declared 3 MB body (100 MB in all) against a
    32 MiB budget: memory stays bounded, a normal photo is answered at once, and the memory
    comes back when they go."""
    budget_mib = 32
    server, url = _start_server(
        {
            "HOTDOG_MODEL_URI": str(exported_model / "model.int8.onnx"),
            "HOTDOG_MAX_PAYLOAD_BYTES": "4000000",
            "HOTDOG_BODY_MEMORY_BYTES": str(budget_mib * 1024 * 1024),
        }
    )
    clients: list[socket.socket] = []
    try:
        photo = {"file": ("a.jpg", _jpeg_bytes())}
        for _ in range(5):
            httpx.post(f"{url}/predict", files=photo)
        before = _rss_kib(server.pid)
        for _ in range(40):
            clients.append(_stall(url, 3_000_000, 2_500_000))
        time.sleep(1.0)
        held_mib = (_rss_kib(server.pid) - before) / 1024
        started = time.perf_counter()
        answer = httpx.post(f"{url}/predict", files=photo, timeout=10)
        seconds = time.perf_counter() - started
        assert answer.status_code == 200 and seconds < 1.0, (answer.status_code, seconds)
        assert held_mib < budget_mib + 24, f"RSS grew by {held_mib:.0f} MiB"
        dropped = [_answer_of(client, 0.2) for client in clients]
        refusals = [text for text in dropped if text.startswith("HTTP/1.1 503")]
        # The bodies that stalled first made room: only what fits in the budget is still held.
        assert len(refusals) >= 40 - budget_mib * 1024 * 1024 // 2_500_000
        assert "dropped this one, the slowest; retry shortly." in refusals[0]
        assert "retry-after: 1" in refusals[0].lower()
    finally:
        for client in clients:
            client.close()
        time.sleep(1.0)
        after_mib = (_rss_kib(server.pid) - before) / 1024
        server.terminate()
        server.wait(15)
    assert after_mib < 16, f"{after_mib:.0f} MiB still held after the clients left"


def test_a_body_slower_than_the_deadline_gets_408(exported_model: Path):
    server, url = _start_server(
        {"HOTDOG_MODEL_URI": str(exported_model / "model.int8.onnx"), "HOTDOG_BODY_TIMEOUT_S": "1"}
    )
    try:
        client = _stall(url, 100_000, 1_000)
        answer = _answer_of(client, 5)
        assert answer.startswith("HTTP/1.1 408"), answer
        sentence = json.loads(answer.split("\r\n\r\n", 1)[1])["error"]
        assert sentence.startswith("The request body did not arrive within 1 s;")
        assert "\n" not in sentence and sentence.endswith(".")
        client.close()
        assert httpx.post(f"{url}/predict", files={"file": HOT_DOGS[0].open("rb")}).is_success
    finally:
        server.terminate()
        server.wait(15)


def test_sigterm_finishes_requests_in_flight_and_exits_0(exported_model: Path):
    server, url = _start_server({"HOTDOG_MODEL_URI": str(exported_model / "model.int8.onnx")})
    body = _photo_form(_jpeg_bytes())
    host, port = url.removeprefix("http://").split(":")
    client = socket.create_connection((host, int(port)))
    try:
        client.sendall(_multipart_head(url, len(body)) + body[: len(body) // 2])
        time.sleep(0.3)
        server.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        with pytest.raises(httpx.TransportError):  # no longer accepting
            httpx.get(f"{url}/health", timeout=2)
        client.sendall(body[len(body) // 2 :])
        answer = _answer_of(client, 10)
        assert answer.startswith("HTTP/1.1 200"), answer
    finally:
        client.close()
    assert server.wait(15) == 0


def test_prediction_hooks_see_every_classified_image(exported_model: Path):
    from fastapi.testclient import TestClient

    from hotdog.serve.app import create_app

    events = []
    settings = Settings(model_uri=str(exported_model / "model.int8.onnx"))
    with TestClient(create_app(settings, prediction_hooks=[events.append])) as client:
        while client.get("/ready").status_code != 200:
            time.sleep(0.05)
        body = client.post("/predict", files={"file": HOT_DOGS[0].open("rb")}).json()
        png = _encoded(Image.open(NOT_HOT_DOGS[0]).convert("RGB"), "PNG")
        files = [("files", ("a.png", png)), ("files", ("junk.jpg", b"junk"))]
        assert client.post("/predict/batch", files=files).status_code == 200
    assert len(events) == 2  # the junk file was refused, not classified
    first, second = events
    assert (first.label, first.probabilities) == (body["label"], body["probabilities"])
    assert first.model_version == body["model_version"] and first.latency_s > 0
    width, height = Image.open(HOT_DOGS[0]).size
    assert (first.image.format, first.image.width, first.image.height) == ("JPEG", width, height)
    assert second.image.format == "PNG"


def test_one_inference_thread_more_than_the_cores_hold():
    from hotdog.serve.state import inference_threads

    assert inference_threads(cores=2, threads_per_inference=1) == 3
    assert inference_threads(cores=2, threads_per_inference=2) == 2
    assert inference_threads(cores=16, threads_per_inference=4) == 5
    assert inference_threads(cores=1, threads_per_inference=4) == 2
