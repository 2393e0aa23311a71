"""The service's routes, one ``APIRouter`` per concern; :func:`hotdog.serve.app.create_app`
includes them."""

from __future__ import annotations

from typing import Any

from hotdog.serve.schemas import ErrorAnswer


def refusals(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the refusals a route may answer, each ``{"error": sentence}``."""
    return {status: {"model": ErrorAnswer} for status in statuses}


def multipart_body(field: str, many: bool) -> dict[str, Any]:
    """OpenAPI description of a multipart upload, parsed by ``hotdog.serve.uploads``."""
    file = {"type": "string", "format": "binary"}
    schema = {"type": "array", "items": file} if many else file
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {"type": "object", "properties": {field: schema}, "required": [field]}
                }
            },
        }
    }
