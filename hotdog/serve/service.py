"""The classifier as a service: decode uploads, run the model, shape the answers.

Everything here runs in worker threads, never on the event loop: decoding and the model release
the GIL, so the loop keeps accepting requests while images are classified.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from hotdog.core.answers import answer
from hotdog.core.images import UnreadableImageError, decode_upload
from hotdog.core.preprocessing import preprocess_array
from hotdog.monitor.profile import thumbnail
from hotdog.serve.predictors import Predictor

# Pillow's names of the formats a photo upload may have (MPO: JPEGs from many phone cameras).
ACCEPTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF"})


@dataclass(frozen=True)
class Upload:
    filename: str
    data: bytes


@dataclass(frozen=True)
class SentImage:
    """What a client sent: Pillow's name of the file format, and the size stored in the file."""

    format: str
    width: int
    height: int


@dataclass(frozen=True)
class Outcome:
    """The answer for one upload: a prediction, or the reason the image was refused."""

    filename: str
    prediction: dict[str, Any] | None = None
    error: UnreadableImageError | None = None
    image: SentImage | None = None
    # With describe_inputs: the pixels the image statistics are computed from, and the model's
    # embedding (hotdog.monitor).
    thumbnail: np.ndarray | None = None
    embedding: list[float] | None = None


class ClassifierService:
    def __init__(
        self, predictor: Predictor, max_pixels: int, describe_inputs: bool = False
    ) -> None:
        self.predictor = predictor
        self.max_pixels = max_pixels
        self.describe_inputs = describe_inputs
        self.class_names = predictor.metadata.class_names
        self.version = predictor.metadata.version
        self.unsure_below = predictor.metadata.inference.unsure_below

    def warm_up(self, runs: int = 2) -> None:
        """Run the model on blank input so the first request does not pay for lazy setup."""
        size = self.predictor.metadata.data_config.input_size
        blank = np.zeros((1, 3, size, size), dtype=np.float32)
        for _ in range(runs):
            self.predictor.predict(blank)

    def decode(self, upload: Upload) -> tuple[np.ndarray, SentImage]:
        config = self.predictor.metadata.data_config
        decoded = decode_upload(
            upload.data,
            source=upload.filename,
            min_short_side=config.resize_size,
            max_pixels=self.max_pixels,
            formats=ACCEPTED_FORMATS,
        )
        sent = SentImage(decoded.format, decoded.width, decoded.height)
        return preprocess_array(decoded.image, config), sent

    def classify(self, uploads: list[Upload]) -> tuple[list[Outcome], float]:
        """Outcomes in upload order, and the seconds spent decoding and running the model."""
        started = time.perf_counter()
        arrays: list[np.ndarray] = []
        readable: list[int] = []
        outcomes: list[Outcome] = []
        for index, upload in enumerate(uploads):
            try:
                array, sent = self.decode(upload)
            except UnreadableImageError as error:
                outcomes.append(Outcome(upload.filename, error=error))
                continue
            arrays.append(array)
            readable.append(index)
            pixels = thumbnail(array) if self.describe_inputs else None
            outcomes.append(Outcome(upload.filename, image=sent, thumbnail=pixels))
        if arrays and self.describe_inputs:
            probabilities, embeddings = self.predictor.predict_with_embedding(np.stack(arrays))
            for position, index in enumerate(readable):
                outcomes[index] = replace(
                    outcomes[index],
                    prediction=self.encode(probabilities[position].tolist()),
                    embedding=None if embeddings is None else embeddings[position].tolist(),
                )
        elif arrays:
            probabilities = self.predictor.predict(np.stack(arrays))
            for index, row in zip(readable, probabilities.tolist(), strict=True):
                outcomes[index] = replace(outcomes[index], prediction=self.encode(row))
        return outcomes, time.perf_counter() - started

    def encode(self, probabilities: list[float]) -> dict[str, Any]:
        return answer(probabilities, self.class_names, self.unsure_below)
