"""Shared fixtures: composed configs, tiny datasets cut from the shipped sample, a trained model."""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
SAMPLE = ROOT / "data" / "sample"
CLASSES = ("hot_dog", "not_hot_dog")


@pytest.fixture(autouse=True, scope="session")
def _isolated_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No W&B key or home-folder writes; a private image cache; no GPU."""
    base = tmp_path_factory.mktemp("env")
    saved = dict(os.environ)
    for name in ("WANDB_API_KEY", "WANDB_MODE", "HOTDOG_ROOT"):
        os.environ.pop(name, None)
    for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR"):
        os.environ[name] = str(base / name.lower())
    os.environ["HOTDOG_CACHE_DIR"] = str(base / "cache")
    os.environ["CI"] = "1"  # quiet progress bars in test logs
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    yield
    os.environ.clear()
    os.environ.update(saved)


# The smallest config that still trains a real pretrained network end to end: EfficientNet-Lite0
# (its ImageNet weights install with the package, so it learns the sample in one epoch) on 128 px
# photos, one epoch, no flip average. Every test that is not about the recipe composes on top of
# it; the recipe's own size (Lite2, 288/320 px, flip TTA) runs in the tests marked `slow`.
TINY = (
    "model=efficientnet_lite0",
    "model.image_size=128",
    "model.tta_hflip=false",
    "trainer.max_epochs=1",
)


# The smallest run of the training entry point as Vertex starts it (no pretrained weights, one
# epoch at 64 px); the container tests run the same in the training image.
TINY_VERTEX_RUN = [
    "logger=csv",
    "model=mobilenetv3_small_100",
    "model.pretrained=false",
    "model.image_size=64",
    "model.tta_hflip=false",
    "model.freeze_backbone_epochs=0",
    "trainer.max_epochs=1",
    "trainer.precision=32-true",
    "test=false",
]


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def tiny(*overrides: str) -> list[str]:
    """``TINY``, less what ``overrides`` set themselves, then ``overrides``: CLI arguments too."""
    own = {_key(override) for override in overrides}
    return [option for option in TINY if _key(option) not in own] + list(overrides)


def compose_config(*overrides: str, config_name: str = "train") -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name, overrides=list(overrides))


@pytest.fixture
def compose_train(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose ``configs/train.yaml`` as the CLI would, on the tiny config, into ``tmp_path/run``.

    ``recipe=True`` keeps the real defaults, for tests about the recipe itself.
    """

    def _compose(*overrides: str, config_name: str = "train", recipe: bool = False) -> DictConfig:
        base = [f"paths.output_dir={tmp_path / 'run'}"]
        if config_name == "train":
            base.append("logger=csv")
            if not recipe:
                overrides = tuple(tiny(*overrides))
        return compose_config(*base, *overrides, config_name=config_name)

    return _compose


def copy_sample(destination: Path, per_class: int = 4, splits=("train", "test")) -> Path:
    """A small dataset in the Kaggle layout, made of the first photos of the shipped sample."""
    for split in splits:
        for label in CLASSES:
            target = destination / split / label
            target.mkdir(parents=True, exist_ok=True)
            for path in sorted((SAMPLE / split / label).glob("*.jpg"))[:per_class]:
                shutil.copy(path, target / path.name)
    return destination


@pytest.fixture
def small_dataset(tmp_path: Path) -> Path:
    return copy_sample(tmp_path / "data")


def run_cli(*args: str, cwd: Path = ROOT, timeout: float = 600, env: dict | None = None):
    """Run ``python -m ...`` in a child process, as a user would."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@dataclass
class CliResult:
    """What a command printed and its exit status, as ``subprocess.run`` reports them."""

    returncode: int
    stdout: str
    stderr: str


HYDRA_ENTRY_POINTS = {"hotdog.train", "hotdog.evaluate"}  # their main() reads sys.argv


@pytest.fixture
def run_main(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """Call ``python -m MODULE ARGS...`` in the test process: the same code as the command, without
    a child process that imports PyTorch again. One test per command still runs it for real
    (:func:`run_cli`)."""

    # A command's logging.basicConfig binds the root logger to this test's captured stderr; the
    # handlers it adds must not outlive the test, or later tests log into a closed stream.
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))

    def _run(module: str, *args: str) -> CliResult:
        main = importlib.import_module(module).main
        if module in HYDRA_ENTRY_POINTS:
            # Imported, not run as __main__, Hydra would look for the configs inside the package.
            args = (f"--config-path={CONFIGS}", *args)
        monkeypatch.setattr(sys, "argv", [module, *args])
        capsys.readouterr()
        try:
            status = main() if module in HYDRA_ENTRY_POINTS else main(list(args))
        except SystemExit as stop:
            status = stop.code
        captured = capsys.readouterr()
        return CliResult(status if isinstance(status, int) else 0, captured.out, captured.err)

    return _run


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real run of the tiny config on the shipped sample: a frozen epoch, then a full one.
    Two of its eight validation photos set the "unsure" threshold (the default share, 5 %, is
    less than one photo of eight)."""
    from hotdog.train import train

    output = tmp_path_factory.mktemp("trained")
    overrides = tiny(
        "trainer.max_epochs=2", "model.freeze_backbone_epochs=1", "model.unsure_share=0.25"
    )
    train(compose_config(f"paths.output_dir={output}", "logger=csv", *overrides))
    return output


@pytest.fixture(scope="session")
def exported_model(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained run exported to ONNX float32 and int8, checked on the sample's test photos."""
    from hotdog.export import export

    out = tmp_path_factory.mktemp("export")
    data = copy_sample(tmp_path_factory.mktemp("export-data"), per_class=20)
    # One photo of the 40 is 2.5 points: allow two to flip on this briefly trained model.
    result = export(
        trained_run / "checkpoints" / "best.ckpt", out, data, calibration_images=16, max_int8_drop=5
    )
    assert result.int8_path is not None, result.refused_int8
    return out


def copy_export_with_threshold(exported_model: Path, folder: Path, unsure_below: float) -> Path:
    """The int8 model of ``exported_model`` copied into ``folder``, its sidecar's unsure threshold
    set to ``unsure_below`` (1.0: every answer is unsure). Returns the model's path."""
    model = folder / "model.int8.onnx"
    model.write_bytes((exported_model / model.name).read_bytes())
    sidecar = json.loads((exported_model / f"{model.name}.json").read_text())
    Path(f"{model}.json").write_text(json.dumps(sidecar | {"unsure_below": unsure_below}))
    return model


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


SERVER_PIDS: dict[str, int] = {}  # base URL -> process id, for tests that watch memory


@contextmanager
def running_server(env: dict[str, str], timeout: float = 60) -> Iterator[str]:
    """``python -m hotdog.serve`` on 127.0.0.1 with ``env``; yields its URL once /ready is 200."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "hotdog.serve"],
        env={**os.environ, "HOTDOG_HOST": "127.0.0.1", "HOTDOG_PORT": str(port), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    SERVER_PIDS[url] = server.pid
    try:
        deadline = time.monotonic() + timeout
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"the server exited: {server.stdout.read()}")  # type: ignore[union-attr]
            try:
                if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server was not ready after {timeout} s")
            time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.fixture(scope="session")
def live_server(exported_model: Path) -> Iterator[str]:
    """A real uvicorn on 127.0.0.1 serving the int8 model; yields its base URL."""
    with running_server({"HOTDOG_MODEL_URI": str(exported_model / "model.int8.onnx")}) as url:
        yield url


@contextmanager
def start_gcs_emulator(directory: Path, bucket: str) -> Iterator[str]:
    """A Google Cloud Storage API server on 127.0.0.1 with ``bucket``; yields its URL."""
    port = free_port()
    command = [str(Path(sys.executable).with_name("gcp-storage-emulator")), "-d", str(directory)]
    command += ["start", "--host", "127.0.0.1", "--port", str(port), "--default-bucket", bucket]
    server = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(10)


@contextmanager
def refusing_storage(status: int = 400, message: str = "Invalid request") -> Iterator[str]:
    """A storage API on 127.0.0.1 that answers every read with ``status`` and ``message`` in
    Google's error format (as GCS does a request it refuses); yields its URL for
    STORAGE_EMULATOR_HOST."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    body = json.dumps({"error": {"code": status, "message": message}}).encode()

    class Refusing(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        def handle_error(self, request: object, client_address: object) -> None:
            pass  # a client that hangs up early is not this server's problem

    server = Server(("127.0.0.1", 0), Refusing)
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A GCS emulator with the bucket ``hotdog-models``."""
    with start_gcs_emulator(tmp_path_factory.mktemp("gcs-models"), "hotdog-models") as url:
        yield url


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Container tests need a Docker engine: they run only when `-m` names them
    (`pytest -m container`, a step of .ci/run of its own), never in `pytest` or `-m "not slow"`."""
    if "container" in (config.option.markexpr or ""):
        return
    deselected = [item for item in items if item.get_closest_marker("container")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("container")]
