"""ASGI middleware around the routes: the request-body limit and the request metrics."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from hotdog.serve.metrics import ServiceMetrics
from hotdog.serve.refusals import error_response

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def _no_receive() -> dict[str, Any]:
    return {"type": "http.disconnect"}


async def send_error(send: Send, status: int, message: str) -> None:
    """Answer with one sentence and close the connection (the rest of the body is not read)."""
    await error_response(status, message, {"Connection": "close"})(
        {"type": "http"}, _no_receive, send
    )


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
            await send_error(send, 413, self._too_large(f"{int(declared):,} bytes"))
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
                await send_error(send, 413, self._too_large("larger"))
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
    """Count and time every request by route template and status; track requests in flight.

    ``known_paths`` label requests answered before routing (a 413); any other path is
    ``unmatched``, so scanners cannot grow the metrics without bound.
    """

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, known_paths: Collection[str]) -> None:
        self.app, self.metrics, self.known_paths = app, metrics, frozenset(known_paths)

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
                scope["path"] if scope["path"] in self.known_paths else "unmatched"
            )
            self.metrics.requests.labels(path, scope["method"], str(status)).inc()
            self.metrics.latency.labels(path, str(status)).observe(time.perf_counter() - started)
