"""What does the prediction log cost? The serving benchmark with the log off and on, interleaved.

    python benchmarks/prediction_log_overhead.py [--rounds 3] [--duration 20] \
        [--export-dir models/export]

Runs ``benchmarks/serve_load.py`` on the int8 model at concurrency 8, alternating
``HOTDOG_PREDICTION_LOG=off`` and a local log folder (the order flips every round, so a machine
that gets busier or quieter over time favours neither), and prints each run and the medians of
requests/s and p99. The target: the log costs less than 5 % of requests/s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(mode: str, log_dir: Path, args: argparse.Namespace, out: Path) -> dict:
    location = "off" if mode == "off" else str(log_dir)
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "serve_load.py"),
        "--targets", "int8", "--concurrency", "8", "--rss-requests", "0",
        "--duration", str(args.duration), "--export-dir", str(args.export_dir),
        "--serve-env", f"HOTDOG_PREDICTION_LOG={location}", "--out", str(out),
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, text=True)
    phase = json.loads(out.read_text())["targets"]["int8"]["phases"][0]
    return {
        "requests_per_s": phase["requests_per_s"],
        "p99_ms": phase["p99_ms"],
        # The server's own CPU time per answer: what the log costs, robust to a shared machine.
        "server_cpu_ms_per_request": phase.get("server_cpu_ms_per_request"),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--export-dir", type=Path, default=ROOT / "models" / "export")
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as scratch:
        for round_ in range(args.rounds):
            order = ("off", "on") if round_ % 2 == 0 else ("on", "off")
            for mode in order:
                result = run(mode, Path(scratch) / "log", args, Path(scratch) / "out.json")
                runs[mode].append(result)
                print(f"round {round_ + 1}, log {mode}: {result}", flush=True)
        logged = sum(1 for _ in (Path(scratch) / "log").rglob("*.jsonl"))
    medians = {
        mode: {key: statistics.median(r[key] for r in results) for key in results[0]}
        for mode, results in runs.items()
    }
    overhead = 1 - medians["on"]["requests_per_s"] / medians["off"]["requests_per_s"]
    cpu = medians["on"]["server_cpu_ms_per_request"] / medians["off"]["server_cpu_ms_per_request"]
    print(f"medians: {medians}")
    print(f"overhead: {overhead:.1%} of requests/s (target < 5 %); {logged} log files written")
    print(f"server CPU per request with the log: {cpu - 1:+.1%}")


if __name__ == "__main__":
    main()
