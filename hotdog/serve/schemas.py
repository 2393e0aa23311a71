"""The API's request and response bodies as pydantic models, so ``openapi.json`` describes them.

Request bodies are still parsed by the service's own code (``uploads``, ``routes.vertex``), which
answers every refusal with its status and one sentence; these models document them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorAnswer(BaseModel):
    error: str = Field(description="One sentence: what is wrong and what to do.")


class Prediction(BaseModel):
    label: str = Field(description="The most probable class.")
    probability: float = Field(description="Its probability.")
    probabilities: dict[str, float] = Field(description="Every class's probability.")
    unsure: bool = Field(
        description="The probability is below the model's threshold, fitted on its validation "
        "split (`unsure_below` in `/model`): too unsure to say. The label is still its best guess."
    )


class PredictAnswer(Prediction):
    model_version: str
    inference_ms: float = Field(description="Decoding, preprocessing and the model, in ms.")


class BatchPrediction(Prediction):
    file: str


class RefusedImage(BaseModel):
    """An image of a batch that cannot be used; the other images are still classified."""

    file: str | None = None
    error: str
    status: int = Field(description="The HTTP status this image alone would have got.")


class BatchAnswer(BaseModel):
    results: list[BatchPrediction | RefusedImage] = Field(description="In upload order.")
    model_version: str
    inference_ms: float


class Health(BaseModel):
    status: str = "ok"


class Readiness(BaseModel):
    status: str = Field(description="ready, loading or failed.")
    model_version: str | None = None
    error: str | None = None


class Limits(BaseModel):
    max_payload_bytes: int
    vertex_max_payload_bytes: int
    max_pixels: int
    max_batch: int
    timeout_s: float


class ModelInfo(BaseModel, extra="allow"):
    """The model's sidecar (``hotdog.core.artifact.ModelMetadata``) and how it is served."""

    version: str
    precision: str
    backbone: str
    class_names: list[str]
    data_config: dict[str, Any]
    tta_hflip: bool
    unsure_below: float = Field(0.0, description="Answers less probable than this are unsure.")
    sha256: str
    test_accuracy: float | None = None
    backend: str
    model_uri: str
    load_seconds: float
    limits: Limits


class VertexImage(BaseModel):
    b64: str = Field(description="The image file (JPEG, PNG, WebP, GIF, BMP, TIFF), base64.")


class VertexRequest(BaseModel):
    """Vertex AI / KServe v1 prediction request."""

    instances: list[VertexImage] = Field(min_length=1)
    parameters: dict[str, Any] | None = Field(None, description="Accepted and ignored.")


class VertexAnswer(BaseModel):
    """Vertex AI / KServe v1 prediction response: one entry per instance, in order."""

    predictions: list[Prediction | RefusedImage]
