"""Refusals: every request the service will not handle becomes ``{"error": "<one sentence>"}``.

Routes raise :class:`RequestRefusedError`; the handlers installed by :func:`install_handlers`
turn it, and the framework's own errors, into that answer with the right status.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from hotdog.core.images import UnreadableImageError

log = logging.getLogger("hotdog.serve")

# The status for an image that cannot be used, by UnreadableImageError.kind.
STATUS_OF_REFUSAL = {"empty": 400, "unsupported": 415, "too_large": 422, "corrupt": 422}
# What to do about a refused image, where its message does not say it already.
HINTS = {
    "empty": "choose a photo that has content",
    "unsupported": "send a JPEG, PNG, WebP, GIF, BMP or TIFF photo",
    "corrupt": "send the complete file again",
}
# Refusals that are not the client's fault, so not counted as rejected uploads.
NOT_COUNTED = {"not_ready", "timeout"}


class RequestRefusedError(Exception):
    """A request the service will not handle; becomes ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str, reason: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def image_refusal_sentence(error: UnreadableImageError) -> str:
    """The one sentence for an image that cannot be used: what is wrong and what to do."""
    text = str(error).rstrip(".")
    hint = HINTS.get(error.kind)
    return f"{text}; {hint}." if hint and ";" not in text else f"{text}."


def install_handlers(app: FastAPI) -> None:
    """Answer refusals, unknown routes, invalid requests and bugs with one sentence each."""

    @app.exception_handler(RequestRefusedError)
    async def refused(request: Request, error: RequestRefusedError) -> Response:
        if error.reason not in NOT_COUNTED:
            request.app.state.serving.metrics.rejected.labels(error.reason).inc()
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
