"""The HTTP API: ``uvicorn hotdog.serve.app:app`` or ``python -m hotdog.serve``.

Routes: ``POST /predict`` (one photo, multipart field ``file``), ``POST /predict/batch`` (several,
field ``files``), ``GET /health``, ``GET /ready``, ``GET /model``, ``GET /metrics`` and the web
page at ``/``. Every refusal is a 4xx answer ``{"error": "<one sentence>"}``; the server keeps
serving whatever it is sent.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from hotdog import __version__
from hotdog.core.errors import HotdogError
from hotdog.core.images import UnreadableImageError
from hotdog.serve.metrics import ServiceMetrics
from hotdog.serve.predictors import load_predictor
from hotdog.serve.service import ClassifierService, Outcome, Upload
from hotdog.serve.settings import Settings

log = logging.getLogger("hotdog.serve")

STATUS_OF_REFUSAL = {"empty": 400, "unsupported": 415, "too_large": 422, "corrupt": 422}
ROUTES = {"/", "/predict", "/predict/batch", "/health", "/ready", "/model", "/metrics"}

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class RequestRefusedError(Exception):
    """A request the service will not handle; becomes ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str, reason: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _send_error(send: Send, status: int, message: str) -> None:
    await error_response(status, message, {"Connection": "close"})(
        {"type": "http"}, _no_receive, send
    )


async def _no_receive() -> dict[str, Any]:
    return {"type": "http.disconnect"}


class PayloadLimit:
    """Refuse request bodies over ``limit`` bytes with 413, before the app reads any of them.

    The body is read here, counted as it arrives, and handed on only if it fits, so no route can
    be made to buffer more than ``limit`` bytes per request.
    """

    def __init__(self, app: ASGIApp, limit: int, metrics: ServiceMetrics) -> None:
        self.app, self.limit, self.metrics = app, limit, metrics

    def _too_large(self, size: str) -> str:
        return (
            f"The upload is {size}, more than the limit of {self.limit:,} bytes; "
            "send a smaller photo (HOTDOG_MAX_PAYLOAD_BYTES sets the limit)."
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in {"POST", "PUT", "PATCH"}:
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            self.metrics.rejected.labels("payload_too_large").inc()
            await _send_error(send, 413, self._too_large(f"{int(declared):,} bytes"))
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                self.metrics.rejected.labels("payload_too_large").inc()
                await _send_error(send, 413, self._too_large("larger"))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class RequestMetrics:
    """Count and time every request by route template and status; track requests in flight."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_with_status)
        finally:
            self.metrics.in_flight.dec()
            route = scope.get("route")
            path = getattr(route, "path", None) or (
                scope["path"] if scope["path"] in ROUTES else "unmatched"
            )
            self.metrics.requests.labels(path, scope["method"], str(status)).inc()
            self.metrics.latency.labels(path, str(status)).observe(time.perf_counter() - started)


def _page() -> tuple[str, dict[str, str]]:
    """The web page, and headers that let it run its own inline script and style, nothing else."""
    page = resources.files("hotdog.serve").joinpath("static/index.html").read_text("utf-8")

    def hashes(tag: str) -> str:
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", page, flags=re.DOTALL)
        digests = (base64.b64encode(hashlib.sha256(b.encode()).digest()).decode() for b in blocks)
        return " ".join(f"'sha256-{digest}'" for digest in digests)

    policy = (
        f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
        "img-src 'self' blob: data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
    headers = {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    return page, headers


def create_app(
    settings: Settings | None = None,
    on_load_failure: Callable[[str], None] | None = None,
) -> FastAPI:
    """The service for ``settings`` (default: from the environment).

    The model loads in the background after start-up: ``/health`` answers at once, ``/ready``
    once the model is loaded and warmed up. If loading fails, ``/ready`` answers 503 with the
    reason and ``on_load_failure`` is called with it (``python -m hotdog.serve`` then exits).
    """
    settings = settings or Settings.from_env()
    metrics = ServiceMetrics()
    state: dict[str, Any] = {"service": None, "error": None, "load_seconds": None}
    # Requests are decoded and classified in these threads, each inference using
    # settings.threads cores: together they keep every core busy. The pool also bounds the
    # memory held by images being decoded at once.
    executor = ThreadPoolExecutor(
        max(1, (os.cpu_count() or 1) // max(1, settings.threads)),
        thread_name_prefix="hotdog-inference",
    )

    def load() -> ClassifierService:
        started = time.perf_counter()
        service = ClassifierService(load_predictor(settings), settings.max_pixels)
        service.warm_up()
        state["load_seconds"] = time.perf_counter() - started
        return service

    async def load_in_background() -> None:
        try:
            service = await asyncio.get_running_loop().run_in_executor(executor, load)
        except HotdogError as error:
            state["error"] = str(error)
        except Exception as error:  # report, don't die silently in a task
            log.exception("loading the model failed")
            state["error"] = (
                f"Loading {settings.model_uri} failed ({type(error).__name__}: {error})."
            )
        else:
            state["service"] = service
            metrics.model_load.set(state["load_seconds"])
            metrics.model_info.labels(
                service.version, settings.backend, service.predictor.metadata.precision
            ).set(1)
            log.info(
                "model %s ready in %.2f s (%s backend)",
                service.version,
                state["load_seconds"],
                settings.backend,
            )
            return
        log.error("error: %s", state["error"])
        if on_load_failure is not None:
            on_load_failure(state["error"])

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(load_in_background())
        yield
        task.cancel()
        executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="hotdog",
        version=__version__,
        description="Hot dog or not hot dog: an image classifier as a service.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics

    def ready_service() -> ClassifierService:
        service = state["service"]
        if service is None:
            message = state["error"] or "The model is still loading; retry in a few seconds."
            raise RequestRefusedError(503, message, "not_ready")
        return service

    async def read_uploads(request: Request, field: str, limit: int) -> list[Upload]:
        """The files in multipart form ``field``, or a :class:`RequestRefusedError` saying why."""
        example = f"send the photo as multipart/form-data in the field '{field}'"
        body = await request.body()
        if not body:
            raise RequestRefusedError(400, f"The request body is empty; {example}.", "empty_body")
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            raise RequestRefusedError(
                415,
                f"The body is {content_type or 'of no declared type'}, not a form; {example} "
                f"(curl -F {field}=@photo.jpg).",
                "not_multipart",
            )
        try:
            form = await request.form(max_files=limit + 1, max_fields=limit + 8)
        except HTTPException as error:
            if "Too many files" in str(error.detail):
                raise RequestRefusedError(
                    413, f"More than {limit} files in one request; split them up.", "too_many"
                ) from None
            raise RequestRefusedError(
                400, f"The multipart body is malformed ({error.detail}); {example}.", "malformed"
            ) from None
        try:
            files = [item for item in form.getlist(field) if isinstance(item, UploadFile)]
            if not files:
                names = sorted({str(key) for key in form})
                raise RequestRefusedError(
                    400,
                    f"No file in the field '{field}' (fields sent: {names or 'none'}); {example}.",
                    "missing_field",
                )
            if len(files) > 1 and limit == 1:
                raise RequestRefusedError(
                    400,
                    f"{len(files)} files sent to {request.url.path}, which classifies one; "
                    "send several to /predict/batch in the field 'files'.",
                    "too_many",
                )
            if len(files) > limit:
                raise RequestRefusedError(
                    413,
                    f"{len(files)} files in one request, more than the limit of {limit}; "
                    "split them up (HOTDOG_MAX_BATCH sets the limit).",
                    "too_many",
                )
            return [
                Upload(item.filename or f"{field}[{index}]", await item.read())
                for index, item in enumerate(files)
            ]
        finally:
            await form.close()

    async def classify(uploads: list[Upload]) -> tuple[list[Outcome], float]:
        service = ready_service()
        loop = asyncio.get_running_loop()
        try:
            outcomes, seconds = await asyncio.wait_for(
                loop.run_in_executor(executor, service.classify, uploads), settings.timeout_s
            )
        except TimeoutError:
            raise RequestRefusedError(
                503,
                f"The model did not answer within {settings.timeout_s:g} s; the server is "
                "overloaded, retry shortly.",
                "timeout",
            ) from None
        metrics.inference.observe(seconds)
        for outcome in outcomes:
            if outcome.prediction is not None:
                metrics.predictions.labels(outcome.prediction["label"]).inc()
                metrics.confidence.observe(outcome.prediction["probability"])
            elif outcome.error is not None:
                metrics.rejected.labels(outcome.error.kind).inc()
        return outcomes, seconds

    @app.exception_handler(RequestRefusedError)
    async def refused(request: Request, error: RequestRefusedError) -> Response:
        if error.reason not in {"not_ready", "timeout"}:
            metrics.rejected.labels(error.reason).inc()
        headers = {"Retry-After": "1"} if error.status == 503 else None
        return error_response(error.status, error.message, headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> Response:
        messages = {
            404: f"There is no {request.url.path}; see /docs for the API.",
            405: f"{request.method} is not allowed on {request.url.path}; see /docs for the API.",
        }
        return error_response(error.status_code, messages.get(error.status_code, error.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> Response:
        return error_response(422, f"The request is not valid ({error.errors()}); see /docs.")

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, "Something went wrong on the server; it has been logged.")

    @app.post("/predict")
    async def predict(request: Request) -> dict[str, Any]:
        """Classify one photo sent as multipart form field ``file``."""
        ready_service()  # don't read the upload if it cannot be classified
        uploads = await read_uploads(request, "file", limit=1)
        (outcome,), seconds = await classify(uploads)
        if outcome.error is not None:
            raise RequestRefusedError(
                STATUS_OF_REFUSAL[outcome.error.kind], _sentence(outcome.error), outcome.error.kind
            )
        return {
            **(outcome.prediction or {}),
            "model_version": state["service"].version,
            "inference_ms": round(seconds * 1000, 2),
        }

    @app.post("/predict/batch")
    async def predict_batch(request: Request) -> dict[str, Any]:
        """Classify up to HOTDOG_MAX_BATCH photos sent as repeated form field ``files``.

        Each result has the prediction or, for an image that cannot be used, its ``error`` and
        ``status``; the other images are still classified.
        """
        ready_service()
        uploads = await read_uploads(request, "files", limit=settings.max_batch)
        outcomes, seconds = await classify(uploads)
        results = []
        for outcome in outcomes:
            if outcome.error is not None:
                results.append(
                    {
                        "file": outcome.filename,
                        "error": _sentence(outcome.error),
                        "status": STATUS_OF_REFUSAL[outcome.error.kind],
                    }
                )
            else:
                results.append({"file": outcome.filename, **(outcome.prediction or {})})
        return {
            "results": results,
            "model_version": state["service"].version,
            "inference_ms": round(seconds * 1000, 2),
        }

    @app.get("/health")
    async def health() -> dict[str, str]:
        """The process is alive (it may still be loading the model)."""
        return {"status": "ok"}

    @app.get("/ready", response_model=None)
    async def ready() -> dict[str, Any] | Response:
        """200 once the model is loaded and warmed up; 503 with the reason before."""
        if state["service"] is None:
            status = "failed" if state["error"] else "loading"
            body = {"status": status, "error": state["error"]}
            return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})
        return {"status": "ready", "model_version": state["service"].version}

    @app.get("/model")
    async def model() -> dict[str, Any]:
        """What is being served: version, classes, preprocessing, accuracy, limits."""
        service = ready_service()
        return {
            **service.predictor.metadata.to_dict(),
            "backend": settings.backend,
            "model_uri": settings.model_uri,
            "load_seconds": round(state["load_seconds"], 3),
            "limits": {
                "max_payload_bytes": settings.max_payload_bytes,
                "max_pixels": settings.max_pixels,
                "max_batch": settings.max_batch,
                "timeout_s": settings.timeout_s,
            },
        }

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        """Prometheus text format."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    page, page_headers = _page()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers=page_headers)

    # Outermost first: metrics see every answer, including the payload limit's 413s.
    app.add_middleware(PayloadLimit, limit=settings.max_payload_bytes, metrics=metrics)
    app.add_middleware(RequestMetrics, metrics=metrics)
    return app


# What to do about a refused image, where its message does not say it already.
HINTS = {
    "empty": "choose a photo that has content",
    "unsupported": "send a JPEG, PNG, WebP, GIF, BMP or TIFF photo",
    "corrupt": "send the complete file again",
}


def _sentence(error: UnreadableImageError) -> str:
    text = str(error).rstrip(".")
    hint = HINTS.get(error.kind)
    return f"{text}; {hint}." if hint and ";" not in text else f"{text}."


def __getattr__(name: str) -> Any:
    # ``uvicorn hotdog.serve.app:app`` builds the app from the environment on first use only,
    # so importing this module (tests, ``python -m hotdog.serve``) does not read settings.
    if name == "app":
        globals()["app"] = create_app()
        return globals()["app"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
