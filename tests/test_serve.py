"""The inference service on a real uvicorn on 127.0.0.1: answers, bad input, metrics, loading."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from hotdog.core.artifact import ArtifactError, ModelMetadata
from hotdog.serve.settings import Settings, SettingsError
from tests.conftest import SAMPLE, SERVER_PIDS, run_cli, running_server

HOT_DOGS = sorted((SAMPLE / "test" / "hot_dog").glob("*.jpg"))
NOT_HOT_DOGS = sorted((SAMPLE / "test" / "not_hot_dog").glob("*.jpg"))


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
    assert set(body) == {"label", "probability", "probabilities", "model_version", "inference_ms"}
    assert list(body["probabilities"]) == model["class_names"] == ["hot_dog", "not_hot_dog"]
    assert sum(body["probabilities"].values()) == pytest.approx(1, abs=1e-3)
    assert body["probability"] == max(body["probabilities"].values())
    assert body["label"] == max(body["probabilities"], key=body["probabilities"].get)
    assert body["model_version"] == model["version"] and model["precision"] == "int8"
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
    ],
)
def test_start_up_errors_are_one_sentence(env: dict[str, str], message: str):
    done = run_cli("-m", "hotdog.serve", env={"HOTDOG_PORT": "0", **env}, timeout=60)
    assert done.returncode in {1, 2}
    assert message in done.stderr and "Traceback" not in done.stderr


def test_settings_from_environment():
    environ = {"HOTDOG_THREADS": "1", "PORT": "9000", "HOTDOG_ACCESS_LOG": "yes"}
    settings = Settings.from_env(environ)
    assert (settings.threads, settings.port, settings.access_log) == (1, 9000, True)
    assert Settings.from_env({}) == Settings()
    with pytest.raises(SettingsError, match="HOTDOG_MAX_BATCH=0 must be positive"):
        Settings.from_env({"HOTDOG_MAX_BATCH": "0"})


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
