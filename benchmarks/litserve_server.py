"""Peer for benchmarks/serve_load.py: the exported model served with LitServe, as a user who
picked LitServe instead of this service would write it.

    python benchmarks/litserve_server.py --model models/export/model.int8.onnx --port 8000

``POST /predict`` with the photo in multipart field ``file`` answers the label and the class
probabilities. It runs the same ONNX file with onnxruntime (one thread per inference, as the
service) and the same decoding and preprocessing (``hotdog.core``), so the comparison is about
the serving around the model. ``--workers`` inference processes (default 2, one per core on
this machine), fed by LitServe's API server process through its queues; ``GET /ready`` is
LitServe's health check (200 once the workers are up).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import litserve as ls
import numpy as np

from hotdog.core.images import decode_image
from hotdog.core.preprocessing import DataConfig, preprocess_array


class HotdogAPI(ls.LitAPI):
    def __init__(self, model: str) -> None:
        super().__init__()
        self.model = model

    def setup(self, device: str) -> None:
        import onnxruntime as ort

        sidecar = json.loads(Path(self.model + ".json").read_text())
        self.class_names = sidecar["class_names"]
        self.data_config = DataConfig.from_dict(sidecar["data_config"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(self.model, options, providers=["CPUExecutionProvider"])

    # No annotations on these two: LitServe reads them to choose how to parse and answer.
    def decode_request(self, request):
        data = request["file"].file.read()
        image = decode_image(data, min_short_side=self.data_config.resize_size)
        return preprocess_array(image, self.data_config)[None]

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
    args = parser.parse_args()
    server = ls.LitServer(
        HotdogAPI(args.model),
        accelerator="cpu",
        workers_per_device=args.workers,
        healthcheck_path="/ready",
        timeout=30,
    )
    server.run(host=args.host, port=args.port, generate_client_file=False, log_level="warning")


if __name__ == "__main__":
    main()
