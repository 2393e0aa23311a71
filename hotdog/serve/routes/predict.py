"""``POST /predict`` (one photo, multipart field ``file``) and ``POST /predict/batch``."""

from __future__ import annotations

from fastapi import APIRouter, Request

from hotdog.serve.dependencies import ReadyService, ServiceSettings, State
from hotdog.serve.refusals import STATUS_OF_REFUSAL, RequestRefusedError, image_refusal_sentence
from hotdog.serve.routes import multipart_body, refusals
from hotdog.serve.schemas import BatchAnswer, BatchPrediction, PredictAnswer, RefusedImage
from hotdog.serve.uploads import read_uploads

router = APIRouter(tags=["predict"])


@router.post(
    "/predict",
    response_model=PredictAnswer,
    responses=refusals(400, 413, 415, 422, 503),
    openapi_extra=multipart_body("file", many=False),
)
async def predict(request: Request, state: State, service: ReadyService) -> PredictAnswer:
    """Classify one photo sent as multipart form field ``file``."""
    uploads = await read_uploads(request, "file", limit=1)
    (outcome,), seconds = await state.classify(uploads)
    if outcome.error is not None:
        raise RequestRefusedError(
            STATUS_OF_REFUSAL[outcome.error.kind],
            image_refusal_sentence(outcome.error),
            outcome.error.kind,
        )
    return PredictAnswer(
        **(outcome.prediction or {}),
        model_version=service.version,
        inference_ms=round(seconds * 1000, 2),
    )


@router.post(
    "/predict/batch",
    response_model=BatchAnswer,
    responses=refusals(400, 413, 415, 503),
    openapi_extra=multipart_body("files", many=True),
)
async def predict_batch(
    request: Request, state: State, service: ReadyService, settings: ServiceSettings
) -> BatchAnswer:
    """Classify up to HOTDOG_MAX_BATCH photos sent as repeated form field ``files``.

    Each result has the prediction or, for an image that cannot be used, its ``error`` and
    ``status``; the other images are still classified.
    """
    uploads = await read_uploads(request, "files", limit=settings.max_batch)
    outcomes, seconds = await state.classify(uploads)
    results: list[BatchPrediction | RefusedImage] = []
    for outcome in outcomes:
        if outcome.error is not None:
            results.append(
                RefusedImage(
                    file=outcome.filename,
                    error=image_refusal_sentence(outcome.error),
                    status=STATUS_OF_REFUSAL[outcome.error.kind],
                )
            )
        else:
            results.append(BatchPrediction(file=outcome.filename, **(outcome.prediction or {})))
    return BatchAnswer(
        results=results, model_version=service.version, inference_ms=round(seconds * 1000, 2)
    )
