"""The images, built by a real Docker engine from the repository's Dockerfiles and run.

Marked `container`: `.ci/run` runs them as their own step (it installs docker.io and
debootstrap first). HOTDOG_DOCKER_ROOT keeps the engine's data (base images, build cache)
between runs on a development machine; by default it lives in pytest's temporary folder.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import (
    ROOT,
    SAMPLE,
    TINY_VERTEX_RUN,
    copy_sample,
    free_port,
    start_gcs_emulator,
)
from tests.containers import (
    BUILDER_BASE,
    RUNTIME_BASE,
    DockerEngine,
    make_base_images,
    start_engine,
)

pytestmark = pytest.mark.container

API_DOCKERFILE = "dockerfiles/api.dockerfile"
TRAIN_DOCKERFILE = "dockerfiles/train.dockerfile"
# This machine's copy of the package index's PyTorch and CUDA wheels (~4 GB): served to the
# build so it need not download them again. Elsewhere the build takes them from the index.
LOCAL_TORCH_INDEX = Path("/opt/pypi-more/simple/torch")
API_SIZE_LIMIT = 400_000_000  # bytes, as `docker images` counts them
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# What an image may be built from: the files .dockerignore lets through, nothing else.
CONTEXT_FILES = ("pyproject.toml", "README.md", ".dockerignore")
CONTEXT_FOLDERS = ("requirements", "configs", "hotdog", "dockerfiles", "data/sample")


@pytest.fixture(scope="session")
def docker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerEngine]:
    root = os.environ.get("HOTDOG_DOCKER_ROOT")
    engine = start_engine(Path(root) if root else tmp_path_factory.mktemp("docker"))
    try:
        started = time.monotonic()
        make_base_images(engine, tmp_path_factory.mktemp("rootfs"))
        print(f"\nlocal base images ready in {time.monotonic() - started:.0f} s")
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model that still tells hot dogs apart: EfficientNet-Lite0's ImageNet features with
    a head trained on the sample (about 87 % on its 40 test photos), exported to int8."""
    from hydra import compose, initialize_config_dir

    from hotdog.export import export
    from hotdog.train import train

    run = tmp_path_factory.mktemp("tiny-run")
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                f"paths.output_dir={run}",
                f"data.root={SAMPLE}",
                "logger=none",
                "model=efficientnet_lite0",
                "model.tta_hflip=false",
                "model.freeze_backbone_epochs=4",
                "trainer.max_epochs=4",
                "data.batch_size=8",
                "trainer.precision=32-true",
                "test=false",
            ],
        )
    train(cfg)
    out = tmp_path_factory.mktemp("tiny-export")
    data = copy_sample(tmp_path_factory.mktemp("tiny-export-data"), per_class=20)
    result = export(
        run / "checkpoints" / "last.ckpt", out, data, calibration_images=16, max_int8_drop=5
    )
    assert result.int8_path is not None, result.refused_int8
    print(f"\ntiny model accuracy on the sample's test photos: {result.accuracy}")
    return out


@pytest.fixture(scope="session")
def build_context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository's build inputs (what .dockerignore lets through)."""
    context = tmp_path_factory.mktemp("context")
    for name in CONTEXT_FILES:
        shutil.copy(ROOT / name, context / name)
    for name in CONTEXT_FOLDERS:
        shutil.copytree(
            ROOT / name, context / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__")
        )
    return context


def build(docker: DockerEngine, context: Path, dockerfile: str, tag: str, *args: str) -> float:
    """Build ``tag`` on the local base images; return the seconds it took."""
    secret = [f"--secret=id=pip-ca,src={CA_BUNDLE}"] if CA_BUNDLE.is_file() else []
    started = time.monotonic()
    docker(
        "build",
        "--network=host",
        *secret,
        f"--build-arg=BASE_IMAGE={RUNTIME_BASE}",
        f"--build-arg=BUILDER_IMAGE={BUILDER_BASE}",
        "-f",
        str(context / dockerfile),
        "-t",
        tag,
        *args,
        str(context),
    )
    return time.monotonic() - started


@pytest.fixture(scope="session")
def api_images(docker: DockerEngine, build_context: Path, tiny_export: Path) -> dict[str, str]:
    # The tiny model where the pipeline puts its export, for the baked image.
    shutil.copytree(tiny_export, build_context / "models" / "export")
    seconds = build(
        docker, build_context, API_DOCKERFILE, "hotdog-api:baked", "--target=api-with-model"
    )
    # The default target shares every layer but the model's: a cache hit.
    cached = build(docker, build_context, API_DOCKERFILE, "hotdog-api:test")
    sizes = {tag: docker.image_size(tag) / 1e6 for tag in ("hotdog-api:test", "hotdog-api:baked")}
    print(f"\nAPI image built in {seconds:.0f} s (default target {cached:.0f} s); MB: {sizes}")
    return {"plain": "hotdog-api:test", "baked": "hotdog-api:baked"}


def run_detached(docker: DockerEngine, image: str, env: dict[str, str]) -> str:
    flags = [f"--env={name}={value}" for name, value in env.items()]
    return docker("run", "-d", "--network=host", *flags, image).stdout.strip()


def wait_ready(docker: DockerEngine, container: str, url: str, timeout: float = 60) -> float:
    """Seconds from now until ``url/ready`` answers 200; fails with the logs if it exits."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        state = docker("inspect", "--format", "{{.State.Running}}", container).stdout.strip()
        if state != "true":
            pytest.fail(f"the container exited: {docker('logs', container).stderr[-3000:]}")
        time.sleep(0.05)
    pytest.fail(f"not ready after {timeout} s: {docker('logs', container).stderr[-3000:]}")


def remove(docker: DockerEngine, container: str) -> None:
    docker("rm", "-f", container, check=False)


@contextmanager
def serving(
    docker: DockerEngine, image: str, port: int, env: dict[str, str]
) -> Iterator[tuple[str, str, float]]:
    """The API image running with ``env`` (which sets ``port``): its URL, the container and the
    seconds it took to be ready; removed afterwards."""
    container = run_detached(docker, image, env)
    try:
        url = f"http://127.0.0.1:{port}"
        yield url, container, wait_ready(docker, container, url)
    finally:
        remove(docker, container)


def emulator_env(gcs: str) -> dict[str, str]:
    """What points the google-cloud clients in the container at the GCS emulator."""
    return {"STORAGE_EMULATOR_HOST": gcs, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}


def photos() -> list[tuple[Path, str]]:
    """The shipped sample's test photos with their labels: what the export measured on."""
    return [
        (path, label)
        for label in ("hot_dog", "not_hot_dog")
        for path in sorted((SAMPLE / "test" / label).glob("*.jpg"))
    ]


def test_api_image_is_small_torch_free_and_unprivileged(docker: DockerEngine, api_images):
    image = api_images["plain"]
    assert docker.image_size(image) <= API_SIZE_LIMIT
    config = json.loads(docker("image", "inspect", "--format", "{{json .Config}}", image).stdout)
    assert config["User"] and not config["User"].startswith(("0", "root"))
    assert config["Cmd"][0] == "python3"  # exec form: no shell between the runtime and uvicorn
    probe = "import importlib.util as u, os; print(os.getuid(), u.find_spec('torch') is None)"
    answer = docker("run", "--rm", image, "python3", "-c", probe).stdout.split()
    assert answer[0] != "0" and answer[1] == "True"


def test_baked_api_image_answers_photos_on_cloud_runs_port(
    docker: DockerEngine, api_images, tiny_export: Path
):
    port = free_port()
    baked = serving(docker, api_images["baked"], port, {"PORT": str(port)})
    with baked as (url, container, cold_start):
        print(f"\ncold start to /ready in the container: {cold_start:.2f} s")
        answers = [
            (httpx.post(f"{url}/predict", files={"file": path.open("rb")}, timeout=10), label)
            for path, label in photos()
        ]
        assert all(answer.status_code == 200 for answer, _ in answers)
        correct = sum(answer.json()["label"] == label for answer, label in answers)
        # The container gets the photos right as often as the export measured outside it
        # (same model, same preprocessing); one photo of slack for decoder differences.
        measured = json.loads((tiny_export / "model.int8.onnx.json").read_text())["test_accuracy"]
        assert correct / len(answers) >= 0.8
        assert abs(correct - measured * len(answers)) <= 1, (correct, measured)
        # The image's own health check, as Docker (and a reader of the Dockerfile) runs it.
        check = json.loads(
            docker("inspect", "--format", "{{json .Config.Healthcheck.Test}}", container).stdout
        )
        assert check[0] == "CMD"
        assert docker("exec", container, *check[1:], check=False).returncode == 0
        assert docker("exec", container, "id", "-u").stdout.strip() == "10001"


def _upload_model(gcs: str, export: Path, prefix: str) -> None:
    """The int8 model and its sidecar into the emulator's hotdog-models bucket under ``prefix``."""
    for name in ("model.int8.onnx", "model.int8.onnx.json"):
        httpx.post(
            f"{gcs}/upload/storage/v1/b/hotdog-models/o",
            params={"uploadType": "media", "name": f"{prefix}/{name}"},
            content=(export / name).read_bytes(),
        ).raise_for_status()


def test_api_image_fetches_its_model_from_gcs_at_start(
    docker: DockerEngine, api_images, tiny_export: Path, tmp_path: Path
):
    with start_gcs_emulator(tmp_path / "gcs", "hotdog-models") as gcs:
        _upload_model(gcs, tiny_export, "v1")
        port = free_port()
        env = {
            "PORT": str(port),
            "HOTDOG_MODEL_URI": "gs://hotdog-models/v1/model.int8.onnx",
            **emulator_env(gcs),
        }
        with serving(docker, api_images["plain"], port, env) as (url, _, _):
            assert httpx.get(f"{url}/model").json()["model_uri"].startswith("gs://")
            path, label = photos()[0]
            answer = httpx.post(f"{url}/predict", files={"file": path.open("rb")}, timeout=10)
            assert answer.json()["label"] == label


def test_api_image_on_vertex_ai(docker: DockerEngine, api_images, tiny_export: Path, tmp_path):
    """The environment Vertex AI sets for the Model in deploy/vertex/model.yaml: the port, the
    routes and the model folder (artifact_uri) as AIP_* variables; its prediction protocol."""
    container_spec = yaml.safe_load((ROOT / "deploy" / "vertex" / "model.yaml").read_text())[
        "container_spec"
    ]
    with start_gcs_emulator(tmp_path / "gcs", "hotdog-models") as gcs:
        _upload_model(gcs, tiny_export, "models/v1")
        port = free_port()
        env = {
            "AIP_HTTP_PORT": str(port),
            "AIP_PREDICT_ROUTE": container_spec["predict_route"],
            "AIP_HEALTH_ROUTE": container_spec["health_route"],
            "AIP_STORAGE_URI": "gs://hotdog-models/models/v1",
            **emulator_env(gcs),
        }
        with serving(docker, api_images["plain"], port, env) as (url, _, _):
            assert httpx.get(url + container_spec["health_route"]).status_code == 200
            chosen = [photos()[0], photos()[-1]]
            body = {
                "instances": [{"b64": base64.b64encode(p.read_bytes()).decode()} for p, _ in chosen]
            }
            answer = httpx.post(url + container_spec["predict_route"], json=body, timeout=10)
            assert answer.status_code == 200, answer.text
            labels = [prediction["label"] for prediction in answer.json()["predictions"]]
            assert labels == [label for _, label in chosen]


def test_api_image_without_a_model_stops_with_one_sentence(docker: DockerEngine, api_images):
    result = docker(
        "run",
        "--rm",
        "--network=host",
        f"--env=PORT={free_port()}",
        "--env=HOTDOG_MODEL_URI=/models/missing.onnx",
        api_images["plain"],
        check=False,
        timeout=60,
    )
    assert result.returncode != 0
    assert "/models/missing.onnx does not exist" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="session")
def torch_index() -> Iterator[list[str]]:
    """Build arguments that take PyTorch from this machine's wheel folder, when it has one."""
    if not LOCAL_TORCH_INDEX.is_dir():
        yield []
        return
    port = free_port()
    root = LOCAL_TORCH_INDEX.parents[2]
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind=127.0.0.1", f"--directory={root}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        index = LOCAL_TORCH_INDEX.parent.relative_to(root)
        yield [f"--build-arg=TORCH_INDEX_URL=http://127.0.0.1:{port}/{index}"]
    finally:
        server.terminate()
        server.wait(10)


@pytest.fixture(scope="session")
def train_image(docker: DockerEngine, build_context: Path, torch_index: list[str]) -> str:
    seconds = build(docker, build_context, TRAIN_DOCKERFILE, "hotdog-train:test", *torch_index)
    size = docker.image_size("hotdog-train:test") / 1e9
    print(f"\ntraining image built in {seconds:.0f} s, {size:.2f} GB")
    return "hotdog-train:test"


def test_training_image_trains_on_its_embedded_sample(
    docker: DockerEngine, train_image: str, tmp_path: Path
):
    """`docker run IMAGE OVERRIDES`: Hydra overrides as arguments, as a non-root user, the run
    folder on a mounted volume."""
    out = tmp_path / "runs"
    out.mkdir()
    out.chmod(0o777)  # the container's user owns nothing on the host
    result = docker(
        "run",
        "--rm",
        "--network=none",
        f"--volume={out}:/out",
        train_image,
        "logger=csv",
        "model=mobilenetv3_small_100",
        "model.pretrained=false",
        "model.image_size=64",
        "model.tta_hflip=false",
        "trainer.max_epochs=1",
        "trainer.precision=32-true",
        "paths.output_dir=/out/run",
        check=False,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = out / "run"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["counts"]["images"] == 40  # the sample's test split, from inside the image
    assert (run / "checkpoints" / "last.ckpt").stat().st_uid == 10001
    config = json.loads(
        docker("image", "inspect", "--format", "{{json .Config}}", train_image).stdout
    )
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["python3", "-m", "hotdog.train"]


def test_training_image_as_two_vertex_replicas(
    docker: DockerEngine, train_image: str, tmp_path: Path
):
    """Two containers, each given the environment Vertex AI sets in one replica of a 2-replica
    job (CLUSTER_SPEC, AIP_CHECKPOINT_DIR and AIP_MODEL_DIR as gs:// URIs, the bucket mounted at
    /gcs/), train one epoch together over gloo; the primary writes to the shared bucket."""
    gcs = tmp_path / "gcs"
    gcs.mkdir()
    gcs.chmod(0o777)
    port = free_port()
    cluster = {"workerpool0": [f"127.0.0.1:{port}"], "workerpool1": [f"127.0.0.1:{port}"]}
    containers = []
    try:
        for pool in ("workerpool0", "workerpool1"):
            spec = {"cluster": cluster, "environment": "cloud", "task": {"type": pool, "index": 0}}
            env = {
                "CLUSTER_SPEC": json.dumps(spec),
                "AIP_CHECKPOINT_DIR": "gs://bucket/job/checkpoints/",
                "AIP_MODEL_DIR": "gs://bucket/job/model/",
            }
            flags = [f"--env={name}={value}" for name, value in env.items()]
            containers.append(
                docker(
                    "run",
                    "-d",
                    "--network=host",
                    f"--volume={gcs}:/gcs",
                    *flags,
                    train_image,
                    "trainer=vertex_ddp",
                    "trainer.num_nodes=2",
                    *TINY_VERTEX_RUN,
                ).stdout.strip()
            )
        codes = [docker("wait", c, timeout=600).stdout.strip() for c in containers]
        logs = [docker("logs", c).stderr for c in containers]
        assert codes == ["0", "0"], [log[-2000:] for log in logs]
        assert "GLOBAL_RANK: 1, MEMBER: 2/2" in logs[1]
        job = gcs / "bucket" / "job"
        assert sorted(p.name for p in (job / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
        assert (job / "model" / "model.ckpt").is_file()
    finally:
        for container in containers:
            remove(docker, container)
