"""Where a loaded server's time goes: py-spy samples ``python -m hotdog.serve`` under load.

    python benchmarks/profile_serve.py [--model models/export/model.int8.onnx]
        [--concurrency 8] [--seconds 20] [--route predict|vertex] [--out reports/profile.txt]

Starts the service on 127.0.0.1, loads it with single-photo requests (the closed-loop client of
benchmarks/serve_load.py) and has py-spy sample every thread of the server 200 times a second
while the load runs (a thread in C code, such as onnxruntime or Pillow, shows the Python call it
is in). Each sample is put in one bucket by the innermost frame it recognises (a model run
inside a route counts as the model), and the report gives each bucket's share of the server's
busy samples: the model, decoding, resize and normalisation, request parsing, answering, and
the event loop and HTTP around them. py-spy counts a thread that waits for a CPU as busy, so on
a machine shared with other work the shares lean towards the threads that wait longest.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from serve_load import (  # noqa: E402
    DEFAULT_IMAGES,
    Tally,
    Target,
    counted,
    drive,
    find_photos,
    multipart_body,
    predict_requests,
    start_server,
    stop_server,
)

# Innermost match wins, so the order is from specific to general; matched against
# "function (file)" of each frame.
BUCKETS = [
    ("model (onnxruntime)", ("onnxruntime", "InferenceSession.run", "predictors.py")),
    ("resize and crop", ("resize_and_crop_image", "ImagingResample", "Image.resize", "resize (")),
    ("normalise", ("preprocess_array", "_normalisation_table")),
    ("decode (Pillow)", ("decode_upload", "decode_image", "ImageFile.load", "decoder", "draft")),
    ("multipart / JSON parsing", ("multipart", "formparsers", "form (", "read_uploads", "json")),
    ("answer (pydantic, JSON)", ("serialize_response", "pydantic", "jsonable_encoder", "render")),
    ("body budget and metrics", ("middleware.py", "prometheus_client")),
    ("HTTP (uvicorn, httptools)", ("httptools", "uvicorn", "h11")),
    ("FastAPI routing and dependencies", ("fastapi", "starlette", "routing")),
    ("event loop", ("asyncio", "uvloop", "selectors")),
]


def bucket_of(stack: str) -> str:
    frames = stack.split(";")
    for frame in reversed(frames):  # innermost first
        for name, needles in BUCKETS:
            if any(needle in frame for needle in needles):
                return name
    return "other (threads, imports, idle bookkeeping)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models/export/model.int8.onnx")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--route", choices=["predict", "vertex"], default="predict")
    parser.add_argument("--out", type=Path, default=None, help="also write the report here")
    args = parser.parse_args()

    target = Target(
        "int8",
        [sys.executable, "-m", "hotdog.serve"],
        {"HOTDOG_MODEL_URI": str(args.model), "HOTDOG_HOST": "127.0.0.1", "HOTDOG_PORT": "{port}"},
    )
    photos = find_photos(args.images, 200)
    bodies = [multipart_body(photo, index) for index, photo in enumerate(photos)]
    with tempfile.TemporaryDirectory() as scratch:
        server = start_server(target, Path(scratch), 120)
        try:
            name = "vertex" if args.route == "vertex" else "int8"
            requests = predict_requests(bodies, server.port, photos, name)
            tally = Tally()
            load = threading.Thread(
                target=lambda: __import__("asyncio").run(
                    drive(server.port, args.concurrency, counted(requests, 10**9), tally, 30)
                ),
                daemon=True,
            )
            stop_at = time.monotonic() + args.seconds + 3
            load.start()
            time.sleep(2)  # past the warm-up
            raw = Path(scratch) / "profile.txt"
            command = ["py-spy", "record", "--pid", str(server.process.pid), "--rate", "200"]
            command += ["--duration", str(int(args.seconds)), "--format", "raw"]
            command += ["--output", str(raw), "--nonblocking"]
            subprocess.run(command, check=True, capture_output=True)
            answered = len(tally.latencies_ms)
            del stop_at
        finally:
            stop_server(server.process)
        counts: Counter[str] = Counter()
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if stack and count.isdigit():
                counts[bucket_of(stack)] += int(count)
    total = sum(counts.values())
    lines = [
        f"py-spy, {args.seconds:g} s at concurrency {args.concurrency} on /{args.route} "
        f"({answered} answers in all), {total} busy samples of the server's threads:",
        "",
        "| where | share of busy samples |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {100 * count / total:.1f} % |" for name, count in counts.most_common()]
    report = "\n".join(lines)
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report + "\n")


if __name__ == "__main__":
    main()
