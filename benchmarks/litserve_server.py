"""Peer for benchmarks/serve_load.py: the exported model served with LitServe, as a user who
picked LitServe instead of this service would write it.

    python benchmarks/litserve_server.py --model models/export/model.int8.onnx --port 8000

``POST /predict`` with the photo in multipart field ``file`` answers the label and the class
probabilities. It runs the same ONNX file with onnxruntime (one thread per inference, as the
service). ``--preprocessing`` chooses how a photo becomes the model's input:

- ``core`` (default): the service's own decoding and preprocessing (``hotdog.core``), so the
  comparison is about the serving around the model alone;
- ``plain``: what a LitServe user writes from its documentation and timm's evaluation
  transform: Pillow decodes the whole photo, resizes its short side (the model's interpolation),
  crops the centre, and NumPy scales and normalises it.

``--workers`` inference processes (default 2, one per core on
this machine), fed by LitServe's API server process through its queues; ``GET /ready`` is
LitServe's health check (200 once the workers are up).
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import litserve as ls
import numpy as np
from PIL import Image

from hotdog.core.images import decode_image
from hotdog.core.preprocessing import DataConfig, preprocess_array


class HotdogAPI(ls.LitAPI):
    def __init__(self, model: str, preprocessing: str = "core") -> None:
        super().__init__()
        self.model = model
        self.preprocessing = preprocessing

    def setup(self, device: str) -> None:
        import onnxruntime as ort

        sidecar = json.loads(Path(self.model + ".json").read_text())
        self.class_names = sidecar["class_names"]
        self.data_config = DataConfig.from_dict(sidecar["data_config"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(self.model, options, providers=["CPUExecutionProvider"])
        config = self.data_config
        self.mean = np.array(config.mean, dtype=np.float32).reshape(1, 1, 3)
        self.std = np.array(config.std, dtype=np.float32).reshape(1, 1, 3)
        self.resample = getattr(Image.Resampling, config.interpolation.upper())

    # No annotations on these two: LitServe reads them to choose how to parse and answer.
    def decode_request(self, request):
        data = request["file"].file.read()
        if self.preprocessing == "plain":
            return self.plain_preprocessing(data)[None]
        image = decode_image(data, min_short_side=self.data_config.resize_size)
        return preprocess_array(image, self.data_config)[None]

    def plain_preprocessing(self, data: bytes) -> np.ndarray:
        config = self.data_config
        image = Image.open(io.BytesIO(data)).convert("RGB")
        scale = config.resize_size / min(image.size)
        size = (round(image.width * scale), round(image.height * scale))
        image = image.resize(size, self.resample)
        left = (image.width - config.input_size) // 2
        top = (image.height - config.input_size) // 2
        image = image.crop((left, top, left + config.input_size, top + config.input_size))
        pixels = np.asarray(image, dtype=np.float32) / 255.0
        return ((pixels - self.mean) / self.std).transpose(2, 0, 1)

    def predict(self, images: np.ndarray) -> list[float]:
        return self.session.run(["probabilities"], {"image": images})[0][0].tolist()

    def encode_response(self, probabilities):
        best = int(np.argmax(probabilities))
        return {
            "label": self.class_names[best],
            "probability": probabilities[best],
            "probabilities": dict(zip(self.class_names, probabilities, strict=True)),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="models/export/model.int8.onnx")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--preprocessing", choices=("core", "plain"), default="core")
    args = parser.parse_args()
    server = ls.LitServer(
        HotdogAPI(args.model, args.preprocessing),
        accelerator="cpu",
        workers_per_device=args.workers,
        healthcheck_path="/ready",
        timeout=30,
    )
    server.run(host=args.host, port=args.port, generate_client_file=False, log_level="warning")


if __name__ == "__main__":
    main()
