"""What the service is doing: ``/health``, ``/ready``, ``/model`` and ``/metrics``."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hotdog.serve.dependencies import ReadyService, State
from hotdog.serve.routes import refusals
from hotdog.serve.schemas import Health, Limits, ModelInfo, Readiness
from hotdog.serve.state import ServingState

router = APIRouter(tags=["status"])


@router.get("/health", response_model=Health)
async def health() -> Health:
    """The process is alive (it may still be loading the model)."""
    return Health()


def readiness(state: ServingState) -> Readiness | JSONResponse:
    """200 once the model is loaded and warmed up; 503 with the reason before."""
    if state.service is None:
        status = "failed" if state.error else "loading"
        body = {"status": status, "error": state.error}
        return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})
    return Readiness(status="ready", model_version=state.service.version)


@router.get(
    "/ready",
    response_model=Readiness,
    response_model_exclude_none=True,
    responses={503: {"model": Readiness}},
)
async def ready(state: State) -> Readiness | JSONResponse:
    """200 once the model is loaded and warmed up; 503 with the reason before."""
    return readiness(state)


@router.get("/model", response_model=ModelInfo, responses=refusals(503))
async def model(state: State, service: ReadyService) -> ModelInfo:
    """What is being served: version, classes, preprocessing, accuracy, limits."""
    settings = state.settings
    return ModelInfo(
        **service.predictor.metadata.to_dict(),
        backend=settings.backend,
        model_uri=settings.model_location,
        load_seconds=round(state.load_seconds or 0.0, 3),
        limits=Limits(
            max_payload_bytes=settings.max_payload_bytes,
            vertex_max_payload_bytes=settings.vertex_max_payload_bytes,
            max_pixels=settings.max_pixels,
            max_batch=settings.max_batch,
            timeout_s=settings.timeout_s,
        ),
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text."}},
)
async def prometheus_metrics(state: State) -> Response:
    """Prometheus text format."""
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
