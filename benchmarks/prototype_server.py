"""Baseline for benchmarks/serve_load.py: the student prototype's serving design, reproduced.

    python benchmarks/prototype_server.py --port 8000

What it keeps from the prototype, on purpose, because this is what the service is measured
against: a timm resnet18 (2 classes) run by PyTorch in eager mode under `torch.no_grad()`, one
uvicorn worker, and an `async` handler that decodes the upload with PIL, resizes it to 224x224,
converts it with `ToTensor` (no normalisation) and runs the forward pass on the event loop, so
requests are served one at a time. The weights are random: there are no pretrained weights
offline, and the speed of a forward pass does not depend on them. The only addition is
`GET /ready`, which answers 200 once the model is built, so that cold start is measured the same
way as for the service.
"""

from __future__ import annotations

import argparse
import io
from contextlib import asynccontextmanager
from typing import Annotated

import timm
import torch
import uvicorn
from fastapi import FastAPI, File, UploadFile
from fastapi.responses import JSONResponse
from PIL import Image
from torchvision import transforms

CLASS_NAMES = ("hot_dog", "not_hot_dog")
IMAGE_SIZE = 224

model_state: dict[str, object] = {}


@asynccontextmanager
async def lifespan(app: FastAPI):
    model = timm.create_model("resnet18", num_classes=len(CLASS_NAMES))
    model.eval()
    model_state["model"] = model
    model_state["transform"] = transforms.Compose(
        [transforms.Resize((IMAGE_SIZE, IMAGE_SIZE)), transforms.ToTensor()]
    )
    yield
    model_state.clear()


app = FastAPI(title="hotdog prototype (baseline)", lifespan=lifespan)


@app.get("/ready")
async def ready() -> JSONResponse:
    if "model" not in model_state:
        return JSONResponse({"status": "loading"}, status_code=503)
    return JSONResponse({"status": "ready"})


@app.post("/predict")
async def predict(file: Annotated[UploadFile, File()]) -> dict[str, object]:
    contents = await file.read()
    image = Image.open(io.BytesIO(contents)).convert("RGB")
    batch = model_state["transform"](image).unsqueeze(0)
    with torch.no_grad():
        probabilities = torch.softmax(model_state["model"](batch), dim=1)[0]
    best = int(probabilities.argmax())
    return {"label": CLASS_NAMES[best], "probability": float(probabilities[best])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, workers=1)


if __name__ == "__main__":
    main()
