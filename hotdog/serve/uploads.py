"""Reading photos from a multipart form, refusing anything else with one sentence.

The routes parse the body here rather than through a framework parameter, which would answer a
bad upload with a generic 422 before the service could say what is wrong.
"""

from __future__ import annotations

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from hotdog.serve.refusals import RequestRefusedError
from hotdog.serve.service import Upload


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
