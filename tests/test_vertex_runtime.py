"""Training inside a Vertex AI job: CLUSTER_SPEC, its directories, resuming, the W&B secret.

Vertex AI itself cannot run here. Each replica is a process given the environment Vertex sets
(CLUSTER_SPEC, AIP_*_DIR as gs:// URIs); the /gcs/ Cloud Storage FUSE mount is a folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from hotdog.cloud.cluster import ClusterSpec, ClusterSpecError, VertexClusterEnvironment
from hotdog.cloud.vertex_runtime import (
    adapt_to_vertex,
    fuse_path,
    load_wandb_key,
    save_model_outputs,
)
from hotdog.core.errors import HotdogError
from tests.conftest import ROOT, SAMPLE, TINY_VERTEX_RUN, free_port

TINY = [*TINY_VERTEX_RUN, f"data.root={SAMPLE}"]


def cluster_spec(replicas: int, task: str, index: int, port: int = 2222) -> str:
    """CLUSTER_SPEC as Vertex AI sets it in each replica of a job with ``replicas`` replicas."""
    cluster = {"workerpool0": [f"127.0.0.1:{port}"]}
    if replicas > 1:
        cluster["workerpool1"] = [f"127.0.0.1:{port}"] * (replicas - 1)
    return json.dumps(
        {"cluster": cluster, "environment": "cloud", "task": {"type": task, "index": index}}
    )


def test_cluster_spec_gives_node_rank_count_and_rendezvous(monkeypatch):
    assert ClusterSpec.parse(cluster_spec(3, "workerpool0", 0)).node_rank == 0
    worker = ClusterSpec.parse(cluster_spec(3, "workerpool1", 1))
    assert (worker.node_rank, worker.num_nodes) == (2, 3)
    monkeypatch.setenv("CLUSTER_SPEC", cluster_spec(2, "workerpool1", 0, port=3333))
    environment = VertexClusterEnvironment(num_nodes=2)
    assert VertexClusterEnvironment.detect()
    assert (environment.main_address, environment.main_port) == ("127.0.0.1", 3333)
    assert environment.node_rank() == 1


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("not json", "is not the JSON Vertex AI sets"),
        (json.dumps({"cluster": {}, "task": {"type": "workerpool0", "index": 0}}), "0 primary"),
        (
            json.dumps({"cluster": {"workerpool0": ["a:1", "b:1"]}, "task": {}}),
            "is not the JSON",
        ),
        (cluster_spec(2, "workerpool2", 0), "is not a training worker"),
    ],
)
def test_malformed_cluster_spec_is_one_sentence(raw, message):
    with pytest.raises(ClusterSpecError, match=message):
        ClusterSpec.parse(raw)


def test_node_count_must_match_the_cluster(monkeypatch):
    monkeypatch.setenv("CLUSTER_SPEC", cluster_spec(2, "workerpool0", 0))
    with pytest.raises(ClusterSpecError, match=r"trainer.num_nodes=3 but CLUSTER_SPEC has 2"):
        VertexClusterEnvironment(num_nodes=3)
    monkeypatch.delenv("CLUSTER_SPEC")
    with pytest.raises(ClusterSpecError, match="needs CLUSTER_SPEC"):
        VertexClusterEnvironment()


def test_vertex_directories_resume_and_tensorboard(compose_train, tmp_path: Path):
    environ = {
        "HOTDOG_GCS_FUSE_ROOT": str(tmp_path / "gcs"),
        "AIP_CHECKPOINT_DIR": "gs://bucket/job/checkpoints/",
        "AIP_TENSORBOARD_LOG_DIR": "gs://bucket/job/logs/",
    }
    checkpoints = tmp_path / "gcs" / "bucket" / "job" / "checkpoints"
    assert fuse_path(environ["AIP_CHECKPOINT_DIR"], environ) == checkpoints
    cfg = compose_train("logger=none")
    adapt_to_vertex(cfg, environ)
    assert cfg.callbacks.model_checkpoint.dirpath == str(checkpoints)
    assert cfg.ckpt_path is None  # nothing to resume from in a first run
    assert cfg.logger.tensorboard.save_dir == str(tmp_path / "gcs" / "bucket" / "job" / "logs")

    checkpoints.mkdir(parents=True)
    (checkpoints / "last.ckpt").write_bytes(b"cut short while being written")
    restarted = compose_train()
    adapt_to_vertex(restarted, environ)
    assert restarted.ckpt_path is None  # an incomplete checkpoint: start again, don't fail

    with zipfile.ZipFile(checkpoints / "last.ckpt", "w") as archive:  # a checkpoint is a zip
        archive.writestr("archive/data.pkl", b"stand-in")
    restarted = compose_train()
    adapt_to_vertex(restarted, environ)
    assert restarted.ckpt_path == str(checkpoints / "last.ckpt")


def test_outside_vertex_nothing_changes(compose_train):
    cfg = compose_train()
    before = json.dumps(cfg.callbacks.model_checkpoint.dirpath)
    adapt_to_vertex(cfg, {})
    assert json.dumps(cfg.callbacks.model_checkpoint.dirpath) == before
    assert save_model_outputs(Path(), True, {}) is None


class FakeSecretManager:
    """Stands in for Secret Manager's client, which needs Google Cloud."""

    def __init__(self, secrets: dict[str, str]) -> None:
        self.secrets = secrets

    def access_secret_version(self, name: str):
        if name not in self.secrets:
            raise PermissionError(name)
        payload = type("Payload", (), {"data": self.secrets[name].encode()})
        return type("Answer", (), {"payload": payload})


def test_wandb_key_comes_from_secret_manager(monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    name = "projects/p/secrets/wandb-api-key/versions/latest"
    client = FakeSecretManager({name: "k" * 40 + "\n"})
    assert load_wandb_key({"HOTDOG_WANDB_KEY_SECRET": name}, client)
    assert os.environ["WANDB_API_KEY"] == "k" * 40
    monkeypatch.delenv("WANDB_API_KEY")
    with pytest.raises(HotdogError, match=r"cannot be read .*secretAccessor"):
        load_wandb_key({"HOTDOG_WANDB_KEY_SECRET": "projects/p/secrets/other/versions/1"}, client)
    assert not load_wandb_key({}, client)


def _replica(node: str, index: int, port: int, fuse: Path, out: Path, replicas: int):
    env = {
        **os.environ,
        "CLUSTER_SPEC": cluster_spec(replicas, node, index, port),
        "AIP_CHECKPOINT_DIR": "gs://bucket/job/checkpoints/",
        "AIP_MODEL_DIR": "gs://bucket/job/model/",
        "HOTDOG_GCS_FUSE_ROOT": str(fuse),
        "PYTHONPATH": str(ROOT),
    }
    trainer = ["trainer=vertex_ddp", f"trainer.num_nodes={replicas}"] if replicas > 1 else []
    return subprocess.Popen(
        [sys.executable, "-m", "hotdog.train", *TINY, *trainer, f"paths.output_dir={out}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
def test_two_replicas_train_over_gloo_as_vertex_starts_them(tmp_path: Path):
    """Two processes, each with the CLUSTER_SPEC of one replica of a 2-replica job, train one
    epoch together over gloo; the primary writes the checkpoint to AIP_CHECKPOINT_DIR and the
    model to AIP_MODEL_DIR. One replica on the same data is timed beside it."""
    fuse = tmp_path / "gcs"
    started = time.monotonic()
    single = _replica("workerpool0", 0, free_port(), tmp_path / "single-gcs", tmp_path / "one", 1)
    single_log = single.communicate(timeout=600)[0]
    single_seconds = time.monotonic() - started
    assert single.returncode == 0, single_log[-3000:]

    port = free_port()
    started = time.monotonic()
    replicas = [
        _replica("workerpool0", 0, port, fuse, tmp_path / "primary", 2),
        _replica("workerpool1", 0, port, fuse, tmp_path / "worker", 2),
    ]
    logs = [replica.communicate(timeout=600)[0] for replica in replicas]
    ddp_seconds = time.monotonic() - started
    for replica, log in zip(replicas, logs, strict=True):
        assert replica.returncode == 0, log[-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in logs[1]
    checkpoints = fuse / "bucket" / "job" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.ckpt", "last.ckpt"]
    assert (fuse / "bucket" / "job" / "model" / "model.ckpt").is_file()
    assert not (tmp_path / "worker" / "checkpoints").exists()
    print(f"\none replica {single_seconds:.1f} s, two replicas over gloo {ddp_seconds:.1f} s")
