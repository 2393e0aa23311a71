"""What training does inside a Vertex AI CustomJob; nothing at all outside one.

Vertex AI sets three directories when the job has a base output directory, as gs:// URIs:
``AIP_CHECKPOINT_DIR`` (BASE/checkpoints/), ``AIP_MODEL_DIR`` (BASE/model/) and
``AIP_TENSORBOARD_LOG_DIR`` (BASE/logs/). Its custom-training containers also see every bucket
the job's service account can read through Cloud Storage FUSE at ``/gcs/BUCKET/...``, so this
module maps the URIs to those paths and training writes plain files.

- checkpoints go to AIP_CHECKPOINT_DIR, and a job restarted after a preemption resumes from the
  last.ckpt it finds there;
- the best checkpoint, its metrics and the resolved config are copied to AIP_MODEL_DIR;
- TensorBoard logs go to AIP_TENSORBOARD_LOG_DIR;
- the W&B key is read from Secret Manager when ``HOTDOG_WANDB_KEY_SECRET`` names a secret
  version: a CustomJob's environment variables are plain text, so the key itself never is one.
"""

from __future__ import annotations

import logging
import os
import shutil
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

from hotdog.core.errors import HotdogError

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "AIP_CHECKPOINT_DIR"
MODEL_DIR = "AIP_MODEL_DIR"
TENSORBOARD_DIR = "AIP_TENSORBOARD_LOG_DIR"
WANDB_KEY_SECRET = "HOTDOG_WANDB_KEY_SECRET"
# Where Vertex AI mounts Cloud Storage; tests point it at a temporary folder.
FUSE_ROOT_VARIABLE = "HOTDOG_GCS_FUSE_ROOT"
# What a job leaves in AIP_MODEL_DIR: the model, how well it did, how it was made.
MODEL_FILES = {"checkpoints/best.ckpt": "model.ckpt", "metrics.json": "metrics.json"}
MODEL_FILES |= {"config.yaml": "config.yaml"}


def fuse_path(uri: str, environ: Mapping[str, str] = os.environ) -> Path:
    """``gs://bucket/a/b`` as the file path Vertex AI's Cloud Storage FUSE mount gives it."""
    if uri.startswith("/gcs/") or not uri.startswith("gs://"):
        return Path(uri)
    return Path(environ.get(FUSE_ROOT_VARIABLE, "/gcs")) / uri.removeprefix("gs://")


def _directory(name: str, environ: Mapping[str, str]) -> Path | None:
    value = environ.get(name)
    return fuse_path(value, environ) if value else None


def adapt_to_vertex(cfg: DictConfig, environ: Mapping[str, str] = os.environ) -> None:
    """Point checkpoints and TensorBoard at Vertex AI's directories and resume a restarted job."""
    load_wandb_key(environ)
    checkpoints = _directory(CHECKPOINT_DIR, environ)
    tensorboard = _directory(TENSORBOARD_DIR, environ)
    with open_dict(cfg):
        checkpointing = (cfg.get("callbacks") or {}).get("model_checkpoint")
        if checkpoints is not None and checkpointing:
            checkpointing.dirpath = str(checkpoints)
            last = checkpoints / "last.ckpt"
            if cfg.get("ckpt_path") is None and last.is_file():
                if zipfile.is_zipfile(last):
                    log.info("Resuming the restarted job from %s", last)
                    cfg.ckpt_path = str(last)
                else:  # the job was stopped while writing it
                    log.warning("%s is incomplete; the restarted job starts from scratch", last)
        if tensorboard is not None:
            if cfg.get("logger") is None:
                cfg.logger = {}
            cfg.logger.tensorboard = {
                "_target_": "lightning.pytorch.loggers.TensorBoardLogger",
                "save_dir": str(tensorboard),
                "name": "",
                "version": "",
                "default_hp_metric": False,
            }


def save_model_outputs(
    output_dir: Path, is_global_zero: bool, environ: Mapping[str, str] = os.environ
) -> Path | None:
    """Copy the best checkpoint, metrics and config of the run to AIP_MODEL_DIR (rank 0 only)."""
    model_dir = _directory(MODEL_DIR, environ)
    if model_dir is None or not is_global_zero:
        return None
    checkpoints = _directory(CHECKPOINT_DIR, environ) or output_dir / "checkpoints"
    sources = {name: output_dir / name for name in MODEL_FILES}
    sources["checkpoints/best.ckpt"] = checkpoints / "best.ckpt"
    model_dir.mkdir(parents=True, exist_ok=True)
    for name, source in sources.items():
        if source.is_file():
            shutil.copyfile(source, model_dir / MODEL_FILES[name])
    log.info("Model, metrics and config copied to %s", model_dir)
    return model_dir


def load_wandb_key(environ: Mapping[str, str] = os.environ, client: Any = None) -> bool:
    """Set WANDB_API_KEY in this process from the Secret Manager version named by
    HOTDOG_WANDB_KEY_SECRET (``projects/P/secrets/S/versions/latest``); True if it did."""
    name = environ.get(WANDB_KEY_SECRET)
    if not name or os.environ.get("WANDB_API_KEY"):
        return False
    if client is None:
        try:
            from google.cloud import secretmanager
        except ImportError:
            raise HotdogError(
                f"{WANDB_KEY_SECRET} is set but google-cloud-secret-manager is not installed; "
                "install the gcp extra: pip install 'hotdog[gcp]'."
            ) from None
        client = secretmanager.SecretManagerServiceClient()
    try:
        answer = client.access_secret_version(name=name)
    except Exception as error:  # permission, missing secret, no credentials: all user-fixable
        raise HotdogError(
            f"The W&B key in Secret Manager ({name}) cannot be read ({type(error).__name__}); "
            "check the name and grant the job's service account roles/secretmanager.secretAccessor."
        ) from None
    os.environ["WANDB_API_KEY"] = answer.payload.data.decode().strip()
    return True
