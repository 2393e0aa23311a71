"""The Vertex AI / KServe v1 prediction protocol, at ``AIP_PREDICT_ROUTE`` and ``AIP_HEALTH_ROUTE``.

``POST {"instances": [{"b64": "<image file, base64>"}, ...], "parameters": {...}}`` answers
``{"predictions": [...]}`` in instance order: each a prediction, or for an instance that cannot
be used its own ``error`` sentence and ``status``, without failing the others. A request that is
not of this shape is refused as a whole, with one sentence.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from hotdog.serve.dependencies import ReadyService, State
from hotdog.serve.refusals import STATUS_OF_REFUSAL, RequestRefusedError, image_refusal_sentence
from hotdog.serve.routes import refusals
from hotdog.serve.routes.status import readiness
from hotdog.serve.schemas import Prediction, Readiness, RefusedImage, VertexAnswer, VertexRequest
from hotdog.serve.service import Upload
from hotdog.serve.settings import Settings

EXAMPLE = 'send {"instances": [{"b64": "<base64 of a photo>"}]}'


def parse_instances(body: bytes, max_instances: int) -> list[Upload | RefusedImage]:
    """Each instance's image bytes, or its own refusal; a :class:`RequestRefusedError` for a
    request that is not a prediction request at all."""
    if not body:
        raise RequestRefusedError(400, f"The request body is empty; {EXAMPLE}.", "empty_body")
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise RequestRefusedError(
            400, f"The body is not valid JSON ({error}); {EXAMPLE}.", "malformed"
        ) from None
    if not isinstance(request, dict) or "instances" not in request:
        raise RequestRefusedError(
            400, f"The body has no 'instances' key; {EXAMPLE}.", "missing_field"
        )
    instances = request["instances"]
    if not isinstance(instances, list) or not instances:
        raise RequestRefusedError(
            400, f"'instances' must be a non-empty list; {EXAMPLE}.", "malformed"
        )
    if len(instances) > max_instances:
        raise RequestRefusedError(
            413,
            f"{len(instances)} instances in one request, more than the limit of {max_instances}; "
            "split them up (HOTDOG_MAX_BATCH sets the limit).",
            "too_many",
        )
    parsed: list[Upload | RefusedImage] = []
    for index, instance in enumerate(instances):
        name = f"instance {index}"
        encoded = instance.get("b64") if isinstance(instance, dict) else None
        if not isinstance(encoded, str):
            parsed.append(
                RefusedImage(
                    error=f"{name.capitalize()} has no 'b64' string; {EXAMPLE}.", status=400
                )
            )
            continue
        try:
            parsed.append(Upload(name, base64.b64decode(encoded, validate=True)))
        except (binascii.Error, ValueError):
            parsed.append(
                RefusedImage(
                    error=f"{name.capitalize()}'s 'b64' is not valid base64; encode the image "
                    "file with standard base64 (RFC 4648, with padding).",
                    status=400,
                )
            )
    return parsed


def router(settings: Settings) -> APIRouter:
    """The Vertex routes at the paths Vertex sets (or the KServe-style defaults)."""
    vertex = APIRouter(tags=["vertex"])

    @vertex.post(
        settings.predict_route,
        response_model=VertexAnswer,
        responses=refusals(400, 413, 503),
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": VertexRequest.model_json_schema()}},
            }
        },
        summary="Vertex AI / KServe v1 prediction",
    )
    async def vertex_predict(request: Request, state: State, service: ReadyService) -> Any:
        """Classify base64 images sent as ``{"instances": [{"b64": ...}]}`` (Vertex AI, KServe
        v1); each instance gets a prediction or its own error."""
        parsed = parse_instances(await request.body(), state.settings.max_batch)
        uploads = [item for item in parsed if isinstance(item, Upload)]
        if uploads:
            outcomes, _ = await state.classify(uploads)
        else:
            outcomes = []
        by_name = {outcome.filename: outcome for outcome in outcomes}
        predictions: list[Prediction | RefusedImage] = []
        for item in parsed:
            if isinstance(item, RefusedImage):
                state.metrics.rejected.labels("bad_instance").inc()
                predictions.append(item)
                continue
            outcome = by_name[item.filename]
            if outcome.error is not None:
                predictions.append(
                    RefusedImage(
                        error=image_refusal_sentence(outcome.error),
                        status=STATUS_OF_REFUSAL[outcome.error.kind],
                    )
                )
            else:
                predictions.append(Prediction(**(outcome.prediction or {})))
        return VertexAnswer(predictions=predictions)

    @vertex.get(
        settings.health_route,
        response_model=Readiness,
        response_model_exclude_none=True,
        responses={503: {"model": Readiness}},
        summary="Vertex AI health check",
    )
    async def vertex_health(state: State) -> Readiness | JSONResponse:
        """200 once the model is loaded (Vertex then routes traffic here); 503 before."""
        return readiness(state)

    return vertex
