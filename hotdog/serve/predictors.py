"""Model runtimes behind the service: onnxruntime (default, no PyTorch) or a PyTorch checkpoint.

Both take a batch of normalised NCHW float32 images and return class probabilities, and both
describe themselves with the same :class:`ModelMetadata`, so the rest of the service does not
care which runs.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Protocol

import numpy as np

from hotdog.core.artifact import ModelMetadata, model_version
from hotdog.core.errors import HotdogError, problem
from hotdog.serve.model_store import ModelLoadError, fetch_model, read_bytes
from hotdog.serve.settings import Settings


class Predictor(Protocol):
    metadata: ModelMetadata

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities, shape (N, classes), for normalised images of shape (N, 3, H, W)."""
        ...

    def predict_with_embedding(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities and the model's reduced embedding (N, D) from the same pass, or None
        when the model has no embedding output (for the prediction log's drift features)."""
        ...


class OnnxPredictor:
    """An exported ONNX model (float32 or int8) run by onnxruntime on the CPU."""

    def __init__(self, settings: Settings) -> None:
        import onnxruntime as ort

        try:
            artifact = fetch_model(settings.model_location)
        except ModelLoadError as error:
            if not settings.storage_uri:
                raise
            # Vertex AI's folder wins over HOTDOG_MODEL_URI, so say where the model was sought.
            raise ModelLoadError(
                f"AIP_STORAGE_URI={settings.storage_uri} is set, so the model is read from "
                f"{settings.model_location}, which failed ({problem(error)}); put "
                f"{settings.model_file} and its .json sidecar there, or unset AIP_STORAGE_URI "
                "to serve HOTDOG_MODEL_URI."
            ) from None
        self.metadata = artifact.metadata
        options = ort.SessionOptions()
        options.intra_op_num_threads = settings.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # Busy-waiting threads would take CPU from request parsing and image decoding.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(
                artifact.data, options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime raises its own untyped errors
            raise ModelLoadError(
                f"{settings.model_location} is not a usable ONNX model ({error}); re-export it."
            ) from None

    def predict(self, images: np.ndarray) -> np.ndarray:
        feed = {self.metadata.input_name: images}
        return self.session.run([self.metadata.output_name], feed)[0]

    def predict_with_embedding(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if not self.metadata.embedding_name:
            return self.predict(images), None
        outputs = [self.metadata.output_name, self.metadata.embedding_name]
        probabilities, embeddings = self.session.run(outputs, {self.metadata.input_name: images})
        return probabilities, embeddings


class TorchPredictor:
    """A checkpoint written by ``hotdog.train``, run in PyTorch (needs the ``train`` extra)."""

    def __init__(self, settings: Settings) -> None:
        location = settings.model_location
        if location.endswith(".onnx"):
            raise ModelLoadError(
                f"{location} is an exported ONNX model, not a checkpoint; serve it with the "
                "onnx backend (drop --backend torch or HOTDOG_BACKEND=torch)."
            )
        try:
            import torch

            from hotdog.models import load_classifier
        except ImportError as error:
            raise ModelLoadError(
                f"HOTDOG_BACKEND=torch needs {error.name}; install 'hotdog[train]' or use the "
                "onnx backend with an exported model."
            ) from None
        torch.set_num_threads(settings.threads)
        data = read_bytes(location)
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / "model.ckpt"
            path.write_bytes(data)
            try:
                self.model = load_classifier(path)
            except HotdogError as error:  # it names the scratch copy; name what the user gave
                raise ModelLoadError(str(error).replace(str(path), location)) from None
        self._torch = torch
        info = self.model.inference_info()
        digest = hashlib.sha256(data).hexdigest()
        self.metadata = ModelMetadata(
            inference=info,
            version=model_version(info.backbone, "torch", digest),
            precision="fp32",
            sha256=digest,
            format="checkpoint",
        )

    def predict(self, images: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            return self.model.predict_proba(self._torch.from_numpy(images)).float().numpy()

    def predict_with_embedding(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        return self.predict(images), None  # the projection is made by export


def load_predictor(settings: Settings) -> Predictor:
    if settings.backend == "torch":
        return TorchPredictor(settings)
    return OnnxPredictor(settings)
