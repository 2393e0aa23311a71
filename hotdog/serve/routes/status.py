"""What the service is doing: ``/health``, ``/ready``, ``/model`` and ``/metrics``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hotdog.serve.dependencies import ReadyService, State

router = APIRouter(tags=["status"])


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is alive (it may still be loading the model)."""
    return {"status": "ok"}


@router.get("/ready", response_model=None)
async def ready(state: State) -> dict[str, Any] | Response:
    """200 once the model is loaded and warmed up; 503 with the reason before."""
    if state.service is None:
        status = "failed" if state.error else "loading"
        body = {"status": status, "error": state.error}
        return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})
    return {"status": "ready", "model_version": state.service.version}


@router.get("/model")
async def model(state: State, service: ReadyService) -> dict[str, Any]:
    """What is being served: version, classes, preprocessing, accuracy, limits."""
    settings = state.settings
    return {
        **service.predictor.metadata.to_dict(),
        "backend": settings.backend,
        "model_uri": settings.model_uri,
        "load_seconds": round(state.load_seconds or 0.0, 3),
        "limits": {
            "max_payload_bytes": settings.max_payload_bytes,
            "max_pixels": settings.max_pixels,
            "max_batch": settings.max_batch,
            "timeout_s": settings.timeout_s,
        },
    }


@router.get("/metrics")
async def prometheus_metrics(state: State) -> Response:
    """Prometheus text format."""
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
