"""Fetch a model and its sidecar from a local path or a ``gs://`` URI, and check they match."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from hotdog.core.artifact import ModelMetadata, sidecar_uri
from hotdog.core.cli import is_url
from hotdog.core.errors import GCS_READ_HINT, HotdogError, first_line


class ModelLoadError(HotdogError):
    """The model named by HOTDOG_MODEL_URI cannot be fetched or does not match its sidecar."""


class ModelNotFoundError(ModelLoadError):
    """Nothing is stored at the path or URI (as against a store that cannot be reached)."""


@dataclass(frozen=True)
class ModelArtifact:
    uri: str
    data: bytes
    metadata: ModelMetadata


def read_bytes(uri: str) -> bytes:
    """The bytes at a local path or fsspec URL, or a :class:`ModelLoadError` in one sentence."""
    if not is_url(uri):
        path = Path(uri.removeprefix("file://"))
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise ModelNotFoundError(
                f"{path} does not exist; export a model with `python -m hotdog.export CKPT` "
                "or set HOTDOG_MODEL_URI to one."
            ) from None
        except OSError as error:
            raise ModelLoadError(f"{path} cannot be read ({error.strerror}).") from None
    try:
        import fsspec

        with fsspec.open(uri, "rb") as file:
            return file.read()
    except FileNotFoundError:
        raise ModelNotFoundError(
            f"{uri} does not exist; upload the model and its .json sidecar there, "
            "or set HOTDOG_MODEL_URI to where they are."
        ) from None
    except ImportError as error:
        raise ModelLoadError(
            f"Reading {uri} needs {error.name}; install the serving extra: "
            "pip install 'hotdog[serve]'."
        ) from None
    except Exception as error:  # gcsfs raises many types for auth and network failures
        raise ModelLoadError(
            f"{uri} cannot be read ({type(error).__name__}: {first_line(error)}); {GCS_READ_HINT}."
        ) from None


def fetch_model(uri: str) -> ModelArtifact:
    """The exported model at ``uri`` with its sidecar, after checking the model's SHA-256."""
    if uri.endswith(".ckpt"):
        raise ModelLoadError(
            f"{uri} is a training checkpoint, not an exported model; serve it with "
            "--backend torch (HOTDOG_BACKEND=torch), or export it with `python -m hotdog.export`."
        )
    data = read_bytes(uri)
    metadata = ModelMetadata.from_json(read_bytes(sidecar_uri(uri)), source=sidecar_uri(uri))
    expected = metadata.sha256
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise ModelLoadError(
            f"{uri} has SHA-256 {actual[:12]}… but its sidecar expects {expected[:12]}…; the "
            "model or the sidecar was changed or only half copied: copy both files again."
        )
    return ModelArtifact(uri=uri, data=data, metadata=metadata)
