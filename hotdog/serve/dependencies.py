"""What routes declare they need, as ``Annotated`` FastAPI dependencies.

They are ``async`` so FastAPI calls them on the event loop instead of a thread per request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from hotdog.serve.service import ClassifierService
from hotdog.serve.settings import Settings
from hotdog.serve.state import ServingState


async def serving_state(request: Request) -> ServingState:
    return request.app.state.serving


State = Annotated[ServingState, Depends(serving_state)]


async def settings(state: State) -> Settings:
    return state.settings


async def ready_service(state: State) -> ClassifierService:
    """The loaded model; a 503 with the reason before it is (the body is not read then)."""
    return state.ready_service()


ServiceSettings = Annotated[Settings, Depends(settings)]
ReadyService = Annotated[ClassifierService, Depends(ready_service)]
