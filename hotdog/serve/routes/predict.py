"""``POST /predict`` (one photo, multipart field ``file``) and ``POST /predict/batch``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from hotdog.serve.dependencies import ReadyService, ServiceSettings, State
from hotdog.serve.refusals import STATUS_OF_REFUSAL, RequestRefusedError, image_refusal_sentence
from hotdog.serve.uploads import read_uploads

router = APIRouter(tags=["predict"])


@router.post("/predict")
async def predict(request: Request, state: State, service: ReadyService) -> dict[str, Any]:
    """Classify one photo sent as multipart form field ``file``."""
    uploads = await read_uploads(request, "file", limit=1)
    (outcome,), seconds = await state.classify(uploads)
    if outcome.error is not None:
        raise RequestRefusedError(
            STATUS_OF_REFUSAL[outcome.error.kind],
            image_refusal_sentence(outcome.error),
            outcome.error.kind,
        )
    return {
        **(outcome.prediction or {}),
        "model_version": service.version,
        "inference_ms": round(seconds * 1000, 2),
    }


@router.post("/predict/batch")
async def predict_batch(
    request: Request, state: State, service: ReadyService, settings: ServiceSettings
) -> dict[str, Any]:
    """Classify up to HOTDOG_MAX_BATCH photos sent as repeated form field ``files``.

    Each result has the prediction or, for an image that cannot be used, its ``error`` and
    ``status``; the other images are still classified.
    """
    uploads = await read_uploads(request, "files", limit=settings.max_batch)
    outcomes, seconds = await state.classify(uploads)
    results = []
    for outcome in outcomes:
        if outcome.error is not None:
            results.append(
                {
                    "file": outcome.filename,
                    "error": image_refusal_sentence(outcome.error),
                    "status": STATUS_OF_REFUSAL[outcome.error.kind],
                }
            )
        else:
            results.append({"file": outcome.filename, **(outcome.prediction or {})})
    return {
        "results": results,
        "model_version": service.version,
        "inference_ms": round(seconds * 1000, 2),
    }
