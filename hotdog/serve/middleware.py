"""ASGI middleware around the routes: the request-body limit and the request metrics."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import time
from collections import OrderedDict
from collections.abc import Collection
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hotdog.serve.metrics import ServiceMetrics
from hotdog.serve.refusals import error_response


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


async def send_error(
    send: Send, status: int, message: str, headers: dict[str, str] | None = None
) -> None:
    """Answer with one sentence and close the connection (the rest of the body is not read)."""
    await error_response(status, message, {"Connection": "close", **(headers or {})})(
        {"type": "http"}, _no_receive, send
    )


class BodyBudget:
    """The bytes of request bodies held in memory across all connections, capped at ``limit``.

    A body that would push the total over the cap makes room by dropping the bodies that have
    made no progress for the longest (stalled clients hold memory without end), so a small
    upload arriving while many clients stall is still served. Dropped bodies get a 503 with
    ``Retry-After``. Spooling them to disk instead would not help on Cloud Run, whose disk is
    memory.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0  # bytes of all bodies being received
        self.releasing = 0  # bytes of dropped bodies, freed as soon as their tasks run
        self.peak = 0
        # Bodies being received, least recently progressing first: task -> bytes held.
        self._bodies: OrderedDict[asyncio.Task[Any], int] = OrderedDict()
        self.dropped: set[asyncio.Task[Any]] = set()

    def start(self, task: asyncio.Task[Any]) -> None:
        self._bodies[task] = 0

    def add(self, task: asyncio.Task[Any], size: int) -> bool:
        """Count ``size`` more bytes for ``task``, dropping stalled bodies to make room; False
        if there is no room even so (then ``task`` must give up its body)."""
        self._bodies[task] += size
        self._bodies.move_to_end(task)
        self.held += size
        self.peak = max(self.peak, self.held)
        if self.held - self.releasing <= self.limit:
            return True
        for other, other_held in self._bodies.items():
            if self.held - self.releasing <= self.limit:
                break
            if other is task or other in self.dropped:
                continue
            self.dropped.add(other)
            self.releasing += other_held
            other.cancel()
        return self.held - self.releasing <= self.limit

    def finish(self, task: asyncio.Task[Any]) -> None:
        """The body was handed on or given up: it no longer counts."""
        held = self._bodies.pop(task, 0)
        self.held -= held
        if task in self.dropped:
            self.dropped.discard(task)
            self.releasing -= held
        if self.held == 0 and self.peak > RETURN_MEMORY_AFTER_BYTES:
            self.peak = 0
            return_freed_memory()


class _NoRoomError(Exception):
    """This body does not fit in the budget even after dropping the stalled ones."""


# After this many bytes of bodies were held at once, freed memory is handed back to the OS once
# they are gone (glibc keeps freed heap otherwise: 2 GiB stayed held after 300 stalled clients).
RETURN_MEMORY_AFTER_BYTES = 32 * 1024 * 1024


def return_freed_memory() -> None:
    """glibc's ``malloc_trim``: give freed heap pages back to the OS (no-op elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PayloadLimit:
    """Receive request bodies before the app sees them: at most ``limit`` bytes each (413), within
    ``deadline_s`` (408), and within the shared in-memory :class:`BodyBudget` (503).

    The body is read here, counted as it arrives, and handed on only if it fits, so no route can
    be made to buffer more than ``limit`` bytes per request, and no set of slow clients more
    than the budget.
    """

    def __init__(
        self,
        app: ASGIApp,
        limit: int,
        metrics: ServiceMetrics,
        limits_by_path: dict[str, int] | None = None,
        deadline_s: float = 30.0,
        budget: BodyBudget | None = None,
    ) -> None:
        self.app, self.limit, self.metrics = app, limit, metrics
        self.limits_by_path = limits_by_path or {}
        self.deadline_s = deadline_s
        self.budget = budget or BodyBudget(64 * limit)

    def _too_large(self, size: str, limit: int) -> str:
        setting = "HOTDOG_MAX_PAYLOAD_BYTES"
        if limit != self.limit:
            setting = "HOTDOG_VERTEX_MAX_PAYLOAD_BYTES"
        return (
            f"The upload is {size}, more than the limit of {limit:,} bytes; "
            f"send a smaller photo ({setting} sets the limit)."
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in {"POST", "PUT", "PATCH"}:
            await self.app(scope, receive, send)
            return
        limit = self.limits_by_path.get(scope["path"], self.limit)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            self.metrics.rejected.labels("payload_too_large").inc()
            await send_error(send, 413, self._too_large(f"{int(declared):,} bytes", limit))
            return
        task = asyncio.current_task()
        assert task is not None
        self.budget.start(task)
        try:
            body = await self._receive_body(receive, send, limit, task)
        finally:
            self.budget.finish(task)
        if body is None:
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _receive_body(
        self, receive: Receive, send: Send, limit: int, task: asyncio.Task[Any]
    ) -> bytes | None:
        """The whole body, or None once the client has been answered (or has gone)."""
        chunks, size = [], 0
        try:
            async with asyncio.timeout(self.deadline_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        self.metrics.rejected.labels("payload_too_large").inc()
                        await send_error(send, 413, self._too_large("larger", limit))
                        return None
                    if not self.budget.add(task, len(chunk)):
                        raise _NoRoomError
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)
        except TimeoutError:
            chunks.clear()
            self.metrics.rejected.labels("body_timeout").inc()
            await send_error(
                send,
                408,
                f"The request body did not arrive within {self.deadline_s:g} s; send it again "
                "on a faster connection (HOTDOG_BODY_TIMEOUT_S sets the limit).",
            )
            return None
        except (asyncio.CancelledError, _NoRoomError) as reason:
            if isinstance(reason, asyncio.CancelledError):
                if task not in self.budget.dropped:
                    raise  # shutting down, not the budget
                task.uncancel()
            chunks.clear()
            self.metrics.rejected.labels("memory_budget").inc()
            await send_error(
                send,
                503,
                "The server is holding too many unfinished uploads in memory and dropped this "
                "one, the slowest; retry shortly.",
                {"Retry-After": "1"},
            )
            return None


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

        async def send_with_status(message: Message) -> None:
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
