"""The served model's own ceiling: images/s of the exported ONNX model alone, no HTTP, no decoding.

    python benchmarks/model_ceiling.py [--model models/export/model.int8.onnx] [--seconds 5]

As the service runs it (``OnnxPredictor``, the probabilities output only, as without the
prediction log): one onnxruntime session with one thread per inference, called from one Python
thread per core at once (``--in-flight``, default the number of cores), on preprocessed
images of the model's input size. Batches of 1 (what the service runs at low load) and larger
(``--batches``) show whether batching several requests into one call would raise the ceiling.
Prints the median of ``--repeats`` runs per batch size and the CPU model; no server can answer
more requests/s than this with this model on this machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

from hotdog.serve.predictors import OnnxPredictor
from hotdog.serve.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import cpu_model


def images_per_second(predictor, batch: np.ndarray, in_flight: int, seconds: float) -> float:
    done = [0] * in_flight
    deadline = time.perf_counter() + seconds

    def work(slot: int) -> None:
        while time.perf_counter() < deadline:
            predictor.predict(batch)
            done[slot] += len(batch)

    threads = [threading.Thread(target=work, args=(slot,)) for slot in range(in_flight)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("models/export/model.int8.onnx"))
    parser.add_argument("--in-flight", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    predictor = OnnxPredictor(Settings(model_uri=str(args.model), threads=1))
    size = predictor.metadata.data_config.input_size
    machine = f"{cpu_model()}, {os.cpu_count()} cores"
    print(f"{machine}; {args.model} at {size} px, {args.in_flight} in flight")
    rng = np.random.default_rng(0)
    for batch_size in (int(b) for b in args.batches.split(",")):
        batch = rng.standard_normal((batch_size, 3, size, size), dtype=np.float32)
        predictor.predict(batch)  # warm-up
        runs = [
            images_per_second(predictor, batch, args.in_flight, args.seconds)
            for _ in range(args.repeats)
        ]
        print(
            f"batch {batch_size}: {statistics.median(runs):.1f} images/s "
            f"(runs: {', '.join(f'{r:.1f}' for r in runs)})"
        )


if __name__ == "__main__":
    main()
