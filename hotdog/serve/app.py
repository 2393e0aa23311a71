"""The HTTP API: ``uvicorn hotdog.serve.app:app`` or ``python -m hotdog.serve``.

Routes: ``POST /predict`` (one photo, multipart field ``file``), ``POST /predict/batch`` (several,
field ``files``), the Vertex AI / KServe v1 routes (``POST /v1/models/hotdog:predict``, base64
images in JSON, and ``GET /v1/models/hotdog``; Vertex's ``AIP_*_ROUTE`` variables move them),
``GET /health``, ``GET /ready``, ``GET /model``, ``GET /metrics`` and the web page at ``/``.
Every refusal is a 4xx answer ``{"error": "<one sentence>"}``; the server keeps serving
whatever it is sent.

The parts: :mod:`~hotdog.serve.middleware` (body limit, metrics), :mod:`~hotdog.serve.uploads`
(multipart parsing), :mod:`~hotdog.serve.routes`, :mod:`~hotdog.serve.dependencies`,
:mod:`~hotdog.serve.state` (the model and the per-prediction hooks) and this factory.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from hotdog import __version__
from hotdog.monitor.prediction_log import PredictionLogSettings, open_prediction_log
from hotdog.serve.metrics import ServiceMetrics
from hotdog.serve.middleware import PayloadLimit, RequestMetrics
from hotdog.serve.refusals import install_handlers
from hotdog.serve.routes import page, predict, status, vertex
from hotdog.serve.settings import Settings
from hotdog.serve.state import PredictionHook, ServingState


def create_app(
    settings: Settings | None = None,
    on_load_failure: Callable[[str], None] | None = None,
    prediction_hooks: Sequence[PredictionHook] = (),
    prediction_log: PredictionLogSettings | None = None,
) -> FastAPI:
    """The service for ``settings`` (default: from the environment).

    The model loads in the background after start-up: ``/health`` answers at once, ``/ready``
    once the model is loaded and warmed up. If loading fails, ``/ready`` answers 503 with the
    reason and ``on_load_failure`` is called with it (``python -m hotdog.serve`` then exits).
    Each ``prediction_hooks`` is called with every image classified; the prediction log
    (``prediction_log``, default: from the ``HOTDOG_PREDICTION_LOG*`` environment) is one.
    """
    settings = settings or Settings.from_env()
    metrics = ServiceMetrics()
    log = open_prediction_log(prediction_log or PredictionLogSettings.from_env(), metrics, settings)
    state = ServingState(
        settings,
        metrics=metrics,
        prediction_hooks=(*prediction_hooks, log.hook) if log else prediction_hooks,
        on_load_failure=on_load_failure,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(state.load_in_background())
        yield
        task.cancel()
        state.shutdown()
        if log is not None:
            log.close()  # write what is still queued

    app = FastAPI(
        title="hotdog",
        version=__version__,
        description="Hot dog or not hot dog: an image classifier as a service.",
        lifespan=lifespan,
    )
    app.state.serving = state
    app.state.settings = state.settings
    app.state.metrics = state.metrics
    install_handlers(app)
    for router in (predict.router, vertex.router(state.settings), status.router, page.router):
        app.include_router(router)

    # Outermost first: metrics see every answer, including the payload limit's 413s.
    known_paths = {getattr(route, "path", "") for route in app.routes}
    settings = state.settings
    app.add_middleware(
        PayloadLimit,
        limit=settings.max_payload_bytes,
        metrics=state.metrics,
        # Vertex refuses larger requests itself; a client that gets past it is refused here.
        limits_by_path={settings.predict_route: settings.vertex_max_payload_bytes},
        deadline_s=settings.body_timeout_s,
        budget=state.body_budget,
    )
    app.add_middleware(RequestMetrics, metrics=state.metrics, known_paths=known_paths)
    return app


def __getattr__(name: str) -> Any:
    # ``uvicorn hotdog.serve.app:app`` builds the app from the environment on first use only,
    # so importing this module (tests, ``python -m hotdog.serve``) does not read settings.
    if name == "app":
        globals()["app"] = create_app()
        return globals()["app"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
