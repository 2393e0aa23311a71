"""Benchmark: the inference service under load, side by side with the prototype's design.

    python benchmarks/serve_load.py [--targets baseline,litserve,litserve-plain,fp32,int8,vertex]
        [--concurrency 1,8,32] [--duration 30] [--repeats 3] [--rss-requests 10000]
        [--serve-env HOTDOG_THREADS=2 ...]

Starts each server in turn as a subprocess on 127.0.0.1 (one at a time, so they never compete
for the CPUs) and measures:

- cold start: seconds from spawning the process until `GET /ready` answers 200;
- memory: the server's RSS (VmRSS, worker processes included) after its first 100 requests and
  after `--rss-requests` requests, sent at concurrency 8 right after start;
- for each concurrency level: requests/s and p50/p95/p99 latency of single-image
  `POST /predict` requests (multipart field `file`) over `--duration` seconds, after an uncounted
  warm-up, and every error (any status but 200, a body without a label, a connection error).

The targets are (a) `baseline`: benchmarks/prototype_server.py, the prototype's design (torch
eager resnet18, one uvicorn worker); (b) `litserve`: benchmarks/litserve_server.py, the int8
model served by LitServe (2 workers) with this project's decoding and preprocessing, so that
only the serving around the model differs, and `litserve-plain`: the same peer as a LitServe
user writes it, decoding and preprocessing with plain Pillow and NumPy; (c) `fp32` and (d)
`int8`: `python -m hotdog.serve` with `models/export/model.onnx` and `model.int8.onnx`; (e)
`vertex`: the int8 service through its Vertex AI route (the photo base64 in JSON). With
`--repeats N` the targets are run in N interleaved rounds and each figure is the median.
The load generator is closed-loop: N keep-alive
connections, each sending the next real test photo as soon as the previous answer arrives. It
shares the CPUs with the server, so it is kept cheap: asyncio streams, requests pre-built as
bytes, a minimal HTTP/1.1 response parser.

Prints a markdown report with the ratios against the baseline at concurrency 8 and the targets
(int8 >= 6x the baseline's and >= 1.5x the LitServe peer's requests/s, p99 <= 80 ms,
cold start <= 3 s), and writes every figure
to `--out` as JSON. Exits with status 1 if any request failed or a server did not start. With the
defaults it takes about 15 minutes on two idle cores, most of it the 10,000-request memory runs
(the baseline's alone takes ~6 minutes at ~30 requests/s; `--rss-requests 0` skips them: about
5 minutes in all). On a busy machine it takes longer and the figures are lower: the report warns
when the load average at the start is above 1.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime
import http.client
import importlib.metadata
import itertools
import json
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = ROOT.parent / "shared" / "data" / "hotdog" / "test"
DEFAULT_EXPORT_DIR = ROOT / "models" / "export"
EXPORT_COMMAND = "python -m hotdog.export models/train/checkpoints/best.ckpt"
MODEL_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx", "vertex": "model.int8.onnx"}
MODEL_FILES["litserve"] = MODEL_FILES["litserve-plain"] = MODEL_FILES["int8"]
ALL_TARGETS = ("baseline", "litserve", "litserve-plain", "fp32", "int8", "vertex")
PEERS = ("litserve", "litserve-plain")
# `vertex`: the int8 service, loaded through its Vertex AI route (JSON, base64) not /predict.
VERTEX_ROUTE = "/v1/models/hotdog:predict"

TARGET_SPEEDUP = 6.0
TARGET_PEER_SPEEDUP = 1.5
TARGET_P99_MS = 80.0
TARGET_COLD_START_S = 3.0
TARGET_CONCURRENCY = 8
RSS_CONCURRENCY = 8
RSS_FIRST_REQUESTS = 100
CHECK_RESULTS = {True: "met", False: "not met", None: "not measured"}

HOST = "127.0.0.1"
BOUNDARY = "hotdog-benchmark-3f9a1c7e"
PORT_PLACEHOLDER = "{port}"


# --- targets and servers ------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A server to start: `{port}` in the command or the environment is replaced by its port."""

    name: str
    command: list[str]
    env: dict[str, str]


def build_targets(names: list[str], export_dir: Path, serve_env: dict[str, str]) -> list[Target]:
    targets = []
    for name in names:
        if name == "baseline":
            script = ROOT / "benchmarks" / "prototype_server.py"
            command = [sys.executable, str(script), "--host", HOST, "--port", PORT_PLACEHOLDER]
            targets.append(Target(name, command, {}))
            continue
        model = export_dir / MODEL_FILES[name]
        if not model.is_file():
            raise SystemExit(f"{model} does not exist: run `{EXPORT_COMMAND}` first.")
        if name in PEERS:
            script = ROOT / "benchmarks" / "litserve_server.py"
            command = [sys.executable, str(script), "--model", str(model), "--host", HOST]
            command += ["--preprocessing", "plain" if name == "litserve-plain" else "core"]
            targets.append(Target(name, [*command, "--port", PORT_PLACEHOLDER], {}))
            continue
        env = {
            "HOTDOG_MODEL_URI": str(model),
            "HOTDOG_HOST": HOST,
            "HOTDOG_PORT": PORT_PLACEHOLDER,
            **serve_env,
        }
        targets.append(Target(name, [sys.executable, "-m", "hotdog.serve"], env))
    return targets


class ServerError(Exception):
    """A server that exited or never became ready; `log` holds the end of its output."""

    def __init__(self, message: str, log: str) -> None:
        super().__init__(message)
        self.log = log


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    log_path: Path
    cold_start_s: float


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def is_ready(port: int) -> bool:
    connection = http.client.HTTPConnection(HOST, port, timeout=2)
    try:
        connection.request("GET", "/ready")
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def log_tail(path: Path, lines: int = 15) -> str:
    text = path.read_text(errors="replace").splitlines()
    return "\n".join("    " + line for line in text[-lines:])


def start_server(target: Target, log_dir: Path, timeout_s: float) -> Server:
    """Spawn the target and wait for `/ready`; the time in between is its cold start."""
    port = free_port()
    command = [part.replace(PORT_PLACEHOLDER, str(port)) for part in target.command]
    env = dict(os.environ)
    env.update(
        {key: value.replace(PORT_PLACEHOLDER, str(port)) for key, value in target.env.items()}
    )
    log_path = log_dir / f"{target.name}.log"
    with log_path.open("wb") as log:
        start = time.perf_counter()
        # A session of its own, so that worker processes can be killed with it if need be.
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    while True:
        if is_ready(port):
            return Server(process, port, log_path, time.perf_counter() - start)
        if process.poll() is not None:
            raise ServerError(
                f"exited with status {process.returncode} before /ready answered 200",
                log_tail(log_path),
            )
        if time.perf_counter() - start > timeout_s:
            stop_server(process)
            raise ServerError(f"not ready after {timeout_s:.0f} s", log_tail(log_path))
        time.sleep(0.02)


def stop_server(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(grace_s)
    # Whatever is left of its session: the server itself if it ignored SIGTERM, orphaned workers.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The command name may hold spaces and parentheses: the fields start after the last ")".
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by the process and its descendants."""
    ticks = 0
    for member in [pid, *descendants(pid)]:
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    """VmRSS of the process and all its descendants (shared pages count once per process)."""
    total_kib = 0
    for member in [pid, *descendants(pid)]:
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total_kib += int(line.split()[1])
    return total_kib / 1024


# --- requests and the load generator -----------------------------------------------------------


def find_photos(folder: Path, limit: int) -> list[Path]:
    if not folder.is_dir():
        raise SystemExit(
            f"The test photos are missing: {folder} is not a folder; pass --images with a folder "
            "of .jpg files (searched recursively)."
        )
    photos = sorted(p for p in folder.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg"})
    if not photos:
        raise SystemExit(f"No .jpg photos under {folder}; pass --images with a folder of photos.")
    # Evenly spaced over the sorted list, so that both classes' folders are represented.
    step = max(1, len(photos) // limit)
    return photos[::step][:limit]


def multipart_body(photo: Path, index: int) -> bytes:
    head = (
        f"--{BOUNDARY}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="photo{index}.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    )
    return head.encode() + photo.read_bytes() + f"\r\n--{BOUNDARY}--\r\n".encode()


def predict_requests(
    bodies: list[bytes], port: int, photos: list[Path], target: str
) -> list[bytes]:
    """Complete HTTP/1.1 requests, built once so that the load generator only writes bytes."""
    if target == "vertex":
        return [vertex_request(photo, port) for photo in photos]
    requests = []
    for body in bodies:
        head = (
            f"POST /predict HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        requests.append(head.encode() + body)
    return requests


def vertex_request(photo: Path, port: int) -> bytes:
    """The same photo as a Vertex AI prediction request: one instance, base64 in JSON."""
    encoded = base64.b64encode(photo.read_bytes()).decode()
    body = json.dumps({"instances": [{"b64": encoded}]}).encode()
    head = (
        f"POST {VERTEX_ROUTE} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """Status, body and whether the connection stays open. Uvicorn sends Content-Length bodies;
    chunked ones are read too, in case a server streams."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length, chunked, keep_alive = None, False, True
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding":
            chunked = "chunked" in value
        elif name == "connection":
            keep_alive = "close" not in value
    if chunked:
        parts = []
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
            pass
        return status, b"".join(parts), keep_alive
    if length is None:
        return status, await reader.read(), False
    return status, await reader.readexactly(length), keep_alive


class Connection:
    """One keep-alive connection, reopened after the server closes it or an error."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, data: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        self.writer.write(data)
        await self.writer.drain()
        status, body, keep_alive = await read_response(self.reader)
        if not keep_alive:
            self.close()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None


@dataclass
class Tally:
    """Latencies of the answers that arrive inside `window` (perf_counter seconds), and every
    error, counted by kind."""

    window: tuple[float, float] = (0.0, math.inf)
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    last_progress: float = field(default_factory=time.perf_counter)
    answered: int = 0  # good answers, warm-up included


async def drive(
    port: int, concurrency: int, take: Callable[[], bytes | None], tally: Tally, stall_s: float
) -> None:
    """Closed loop: `concurrency` connections, each sending `take()`'s next request as soon as
    the previous answer arrives, until `take()` returns None. Gives up after `stall_s` seconds
    without any answer, counting each unanswered connection as an error."""

    async def worker() -> None:
        connection = Connection(port)
        try:
            while (request := take()) is not None:
                sent = time.perf_counter()
                try:
                    status, body = await connection.request(request)
                except Exception as error:  # any failed request is a figure to report, not a crash
                    connection.close()
                    tally.errors[type(error).__name__] += 1
                    tally.last_progress = time.perf_counter()
                    await asyncio.sleep(0.05)  # a dead server must not turn this into a busy loop
                    continue
                done = tally.last_progress = time.perf_counter()
                if status != 200:
                    tally.errors[f"HTTP {status}"] += 1
                elif b'"label"' not in body:
                    tally.errors["200 without a label"] += 1
                else:
                    tally.answered += 1
                    if tally.window[0] <= done <= tally.window[1]:
                        tally.latencies_ms.append((done - sent) * 1000)
        finally:
            connection.close()

    tally.last_progress = time.perf_counter()
    pending = {asyncio.create_task(worker()) for _ in range(concurrency)}
    while pending:
        _, pending = await asyncio.wait(pending, timeout=1.0)
        if pending and time.perf_counter() - tally.last_progress > stall_s:
            for task in pending:
                task.cancel()
                tally.errors[f"no answer within {stall_s:.0f} s"] += 1
            await asyncio.gather(*pending, return_exceptions=True)
            break


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile."""
    if not sorted_values:
        return None
    return sorted_values[max(0, math.ceil(q / 100 * len(sorted_values)) - 1)]


def timed_phase(
    port: int,
    requests: list[bytes],
    concurrency: int,
    warmup_s: float,
    duration_s: float,
    stall_s: float,
) -> dict:
    photos = itertools.cycle(requests)
    measure_from = time.perf_counter() + warmup_s
    measure_to = measure_from + duration_s

    def take() -> bytes | None:
        return next(photos) if time.perf_counter() < measure_to else None

    tally = Tally(window=(measure_from, measure_to))
    wall, cpu = time.perf_counter(), time.process_time()
    asyncio.run(drive(port, concurrency, take, tally, stall_s))
    # The load generator's own share of the CPUs it shares with the server.
    client_cpu_percent = 100 * (time.process_time() - cpu) / (time.perf_counter() - wall)
    latencies = sorted(tally.latencies_ms)
    return {
        "concurrency": concurrency,
        "duration_s": duration_s,
        "requests": len(latencies),
        "requests_per_s": len(latencies) / duration_s,
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "p99_ms": percentile(latencies, 99),
        "max_ms": latencies[-1] if latencies else None,
        "errors": sum(tally.errors.values()),
        "error_kinds": dict(tally.errors),
        "client_cpu_percent": client_cpu_percent,
        "answered": tally.answered,
    }


def counted(requests: list[bytes], count: int) -> Callable[[], bytes | None]:
    photos = itertools.cycle(requests)
    left = count

    def take() -> bytes | None:
        nonlocal left
        if left <= 0:
            return None
        left -= 1
        return next(photos)

    return take


def memory_phase(server: Server, requests: list[bytes], total: int, stall_s: float) -> dict:
    """RSS after the first requests and after `total`, all sent at RSS_CONCURRENCY."""
    first = min(RSS_FIRST_REQUESTS, total)
    tally = Tally()
    start = time.perf_counter()
    asyncio.run(drive(server.port, RSS_CONCURRENCY, counted(requests, first), tally, stall_s))
    after_first = rss_mib(server.process.pid)
    asyncio.run(
        drive(server.port, RSS_CONCURRENCY, counted(requests, total - first), tally, stall_s)
    )
    after_total = rss_mib(server.process.pid)
    return {
        "concurrency": RSS_CONCURRENCY,
        "first_requests": first,
        "requests": total,
        "rss_after_first_mib": after_first,
        "rss_after_all_mib": after_total,
        "growth_mib": after_total - after_first,
        "seconds": time.perf_counter() - start,
        "errors": sum(tally.errors.values()),
        "error_kinds": dict(tally.errors),
    }


# --- the run and the report --------------------------------------------------------------------


def run_target(
    target: Target, bodies: list[bytes], photos: list[Path], args: argparse.Namespace, log_dir: Path
) -> dict:
    result: dict = {"command": target.command, "env": target.env, "phases": []}
    result["load_average_before"] = [round(x, 2) for x in os.getloadavg()]
    settings = " ".join(f"{key}={value}" for key, value in target.env.items())
    progress(f"{target.name}: starting {settings} {' '.join(target.command)}".replace("  ", " "))
    try:
        server = start_server(target, log_dir, args.start_timeout)
    except ServerError as error:
        progress(f"{target.name}: {error}; the end of its log:\n{error.log}")
        result["server_error"] = str(error)
        result["log_tail"] = error.log
        return result
    try:
        result["cold_start_s"] = server.cold_start_s
        result["rss_at_ready_mib"] = rss_mib(server.process.pid)
        progress(f"{target.name}: ready in {server.cold_start_s:.2f} s")
        requests = predict_requests(bodies, server.port, photos, target.name)
        if args.rss_requests > 0 and target.name in args.rss_targets:
            memory = memory_phase(server, requests, args.rss_requests, args.stall_timeout)
            result["memory"] = memory
            progress(
                f"{target.name}: RSS {memory['rss_after_first_mib']:.0f} MiB after "
                f"{memory['first_requests']} requests, {memory['rss_after_all_mib']:.0f} MiB "
                f"after {memory['requests']} ({memory['seconds']:.0f} s, "
                f"{memory['errors']} errors)"
            )
        for concurrency in args.concurrency:
            cpu_before = cpu_seconds(server.process.pid)
            phase = timed_phase(
                server.port,
                requests,
                concurrency,
                args.warmup,
                args.duration,
                args.stall_timeout,
            )
            # CPU per answer does not depend on how much of the machine others take.
            cpu_used = cpu_seconds(server.process.pid) - cpu_before
            phase["server_cpu_ms_per_request"] = 1000 * cpu_used / max(1, phase["answered"])
            result["phases"].append(phase)
            progress(f"{target.name}: {phase_line(phase)}")
        result["rss_after_load_mib"] = rss_mib(server.process.pid)
        if server.process.poll() is not None:
            result["server_error"] = f"exited with status {server.process.returncode} under load"
            progress(f"{target.name}: {result['server_error']}; the end of its log:")
            progress(log_tail(server.log_path))
    finally:
        stop_server(server.process)
    return result


def median_run(target_runs: list[dict]) -> dict:
    """One result per target: each phase's figures are the medians over the runs (the errors
    their sum); the runs themselves are kept under ``runs``."""
    if len(target_runs) == 1:
        return target_runs[0]
    result = dict(target_runs[0])
    result["runs"] = target_runs
    complete = [run for run in target_runs if "server_error" not in run]
    if len(complete) < len(target_runs):
        result["server_error"] = next(r["server_error"] for r in target_runs if "server_error" in r)
    if not complete:
        return result
    for key in ("cold_start_s", "rss_at_ready_mib", "rss_after_load_mib"):
        values = [run[key] for run in complete if run.get(key) is not None]
        result[key] = statistics.median(values) if values else None
    phases = []
    for index, phase in enumerate(complete[0]["phases"]):
        same = [run["phases"][index] for run in complete if len(run["phases"]) > index]
        merged = dict(phase)
        for key in (
            "requests_per_s",
            "p50_ms",
            "p95_ms",
            "p99_ms",
            "client_cpu_percent",
            "server_cpu_ms_per_request",
        ):
            values = [p[key] for p in same if p.get(key) is not None]
            merged[key] = statistics.median(values) if values else None
        merged["requests_per_s_runs"] = [round(p["requests_per_s"], 1) for p in same]
        merged["p99_ms_runs"] = [p["p99_ms"] and round(p["p99_ms"], 1) for p in same]
        merged["errors"] = sum(p["errors"] for p in same)
        merged["error_kinds"] = dict(sum((Counter(p["error_kinds"]) for p in same), Counter()))
        phases.append(merged)
    result["phases"] = phases
    return result


def phase_line(phase: dict) -> str:
    return (
        f"c={phase['concurrency']}: {phase['requests_per_s']:.1f} req/s, "
        f"p50 {fmt(phase['p50_ms'])} ms, p95 {fmt(phase['p95_ms'])} ms, "
        f"p99 {fmt(phase['p99_ms'])} ms, {phase['errors']} errors, "
        f"server CPU {fmt(phase.get('server_cpu_ms_per_request'))} ms/request"
    )


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def phase_at(result: dict | None, concurrency: int) -> dict | None:
    if result is None:
        return None
    return next((p for p in result["phases"] if p["concurrency"] == concurrency), None)


def compare(results: dict[str, dict]) -> tuple[dict, list[dict]]:
    """Ratios against the baseline at TARGET_CONCURRENCY, and the targets checked."""
    ratios: dict[str, float | None] = {}
    checks: list[dict] = []
    base = phase_at(results.get("baseline"), TARGET_CONCURRENCY)
    peers = {peer: phase_at(results[peer], TARGET_CONCURRENCY) for peer in PEERS if peer in results}
    for name in ("fp32", "int8", "vertex"):
        if name not in results:
            continue
        phase = phase_at(results[name], TARGET_CONCURRENCY)
        ratio = None
        if base and phase and base["requests_per_s"] > 0:
            ratio = phase["requests_per_s"] / base["requests_per_s"]
        ratios[f"{name}/baseline"] = ratio
        for peer, peer_phase in peers.items():
            peer_ratio = None
            if peer_phase and phase and peer_phase["requests_per_s"] > 0:
                peer_ratio = phase["requests_per_s"] / peer_phase["requests_per_s"]
            ratios[f"{name}/{peer}"] = peer_ratio
            checks.append(
                check(
                    f"{name}: req/s vs the {peer} peer at c={TARGET_CONCURRENCY}",
                    peer_ratio,
                    f">= {TARGET_PEER_SPEEDUP:g}x",
                    peer_ratio is not None and peer_ratio >= TARGET_PEER_SPEEDUP,
                    "x",
                )
            )
        p99 = phase["p99_ms"] if phase else None
        cold = results[name].get("cold_start_s")
        checks += [
            check(
                f"{name}: req/s vs baseline at c={TARGET_CONCURRENCY}",
                ratio,
                f">= {TARGET_SPEEDUP:g}x",
                ratio is not None and ratio >= TARGET_SPEEDUP,
                "x",
            ),
            check(
                f"{name}: p99 at c={TARGET_CONCURRENCY}",
                p99,
                f"<= {TARGET_P99_MS:g} ms",
                p99 is not None and p99 <= TARGET_P99_MS,
                " ms",
            ),
            check(
                f"{name}: cold start to /ready",
                cold,
                f"<= {TARGET_COLD_START_S:g} s",
                cold is not None and cold <= TARGET_COLD_START_S,
                " s",
            ),
        ]
    return ratios, checks


def check(name: str, value: float | None, target: str, met: bool, unit: str) -> dict:
    """`met` is None when the value could not be measured (a target or a phase not run)."""
    shown = "not measured" if value is None else f"{value:.2f}{unit}"
    met_or_none = None if value is None else met
    return {"check": name, "value": value, "shown": shown, "target": target, "met": met_or_none}


def total_errors(results: dict[str, dict]) -> int:
    errors = 0
    for result in results.values():
        errors += "server_error" in result
        errors += sum(phase["errors"] for phase in result["phases"])
        errors += result.get("memory", {}).get("errors", 0)
    return errors


def print_report(report: dict) -> None:
    results = report["targets"]
    machine = report["machine"]
    print(
        f"\n## Serving benchmark, {report['date']}\n\n"
        f"{machine['usable_cpus']} usable CPUs ({machine['cpu_model']}), load average at start "
        f"{machine['load_average_at_start']}; {report['settings']['photos']} photos, "
        f"{report['settings']['duration_s']:g} s per phase after "
        f"{report['settings']['warmup_s']:g} s of warm-up.\n"
    )
    busy = machine["load_average_at_start"][0]
    if busy > 1.0:
        print(
            f"Warning: the machine was not idle at the start (load average {busy} on "
            f"{machine['usable_cpus']} CPUs): other processes compete with the servers, so the "
            "figures understate what the servers can do and vary from run to run.\n"
        )
    print(
        "| target | concurrency | req/s | p50 ms | p95 ms | p99 ms | errors | client CPU "
        "| server CPU ms/request |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, result in results.items():
        for p in result["phases"]:
            print(
                f"| {name} | {p['concurrency']} | {p['requests_per_s']:.1f} | {fmt(p['p50_ms'])} "
                f"| {fmt(p['p95_ms'])} | {fmt(p['p99_ms'])} | {p['errors']} "
                f"| {p['client_cpu_percent']:.0f} % | {fmt(p.get('server_cpu_ms_per_request'))} |"
            )
    print(
        "\n| target | cold start to /ready | RSS at ready | RSS after first | RSS after all "
        "| growth | RSS after all load |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, result in results.items():
        if "cold_start_s" not in result:
            print(f"| {name} | did not start: {result.get('server_error', '')} | | | | | |")
            continue
        memory = result.get("memory")
        first = all_ = growth = "-"
        if memory:
            first = f"{memory['rss_after_first_mib']:.0f} MiB ({memory['first_requests']} req)"
            all_ = f"{memory['rss_after_all_mib']:.0f} MiB ({memory['requests']} req)"
            growth = f"{memory['growth_mib']:+.1f} MiB"
        print(
            f"| {name} | {result['cold_start_s']:.2f} s | {result['rss_at_ready_mib']:.0f} MiB "
            f"| {first} | {all_} | {growth} | {fmt(result.get('rss_after_load_mib'), 0)} MiB |"
        )
    if report["checks"]:
        print(
            "\nTargets (set for int8; fp32 shown for comparison). In a closed loop latency is "
            "about concurrency / throughput,\nso p99 <= 80 ms at c=8 needs roughly 100 req/s "
            "or more.\n"
        )
        print("| check | value | target | result |")
        print("|---|---:|---|---|")
        for c in report["checks"]:
            print(f"| {c['check']} | {c['shown']} | {c['target']} | {CHECK_RESULTS[c['met']]} |")
    errors = report["errors"]
    print(f"\nErrors: {errors} ({'none, as required' if errors == 0 else 'NOT ZERO'}).")
    for name, result in results.items():
        if "server_error" in result:
            print(f"- {name}: the server {result['server_error']}.")
        kinds = Counter(result.get("memory", {}).get("error_kinds", {}))
        for phase in result["phases"]:
            kinds.update(phase["error_kinds"])
        if kinds:
            print(f"- {name}: " + ", ".join(f"{count} x {kind}" for kind, count in kinds.items()))


def cpu_model() -> str:
    """The CPU's model name (these machines are AMD or Intel: figures compare only on one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_info() -> dict:
    def version(package: str) -> str | None:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            package: version(package)
            for package in ("onnxruntime", "torch", "timm", "fastapi", "uvicorn")
        },
    }


def comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--targets", type=comma_list, default=list(ALL_TARGETS), help=",".join(ALL_TARGETS)
    )
    parser.add_argument(
        "--concurrency",
        type=lambda text: [int(c) for c in comma_list(text)],
        default=[1, 8, 32],
        help="concurrent connections, one phase each (default 1,8,32)",
    )
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per phase")
    parser.add_argument(
        "--repeats", type=int, default=1, help="rounds over all targets; medians are reported"
    )
    parser.add_argument("--warmup", type=float, default=2.0, help="uncounted seconds per phase")
    parser.add_argument(
        "--rss-requests",
        type=int,
        default=10_000,
        help="requests (at concurrency 8) before the second RSS reading; 0 skips it",
    )
    parser.add_argument(
        "--rss-targets",
        type=comma_list,
        default=list(ALL_TARGETS),
        help="targets whose memory is measured (default all)",
    )
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="test photos (*.jpg)")
    parser.add_argument("--max-images", type=int, default=200)
    parser.add_argument("--export-dir", type=Path, default=DEFAULT_EXPORT_DIR)
    parser.add_argument(
        "--serve-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for hotdog.serve (e.g. HOTDOG_THREADS=2); repeatable",
    )
    parser.add_argument("--start-timeout", type=float, default=120.0, help="seconds to /ready")
    parser.add_argument(
        "--stall-timeout", type=float, default=30.0, help="seconds without any answer: give up"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "serve_benchmark.json")
    args = parser.parse_args()
    unknown = sorted(set(args.targets) - set(ALL_TARGETS))
    if unknown or not args.targets:
        parser.error(f"--targets takes a comma-separated subset of {','.join(ALL_TARGETS)}")
    if not args.concurrency or min(args.concurrency) < 1:
        parser.error("--concurrency takes positive integers, e.g. 1,8,32")
    for setting in args.serve_env:
        if "=" not in setting:
            parser.error(f"--serve-env takes KEY=VALUE, not {setting!r}")
    return args


def main() -> None:
    args = parse_args()
    serve_env = dict(setting.split("=", 1) for setting in args.serve_env)
    targets = build_targets(args.targets, args.export_dir.resolve(), serve_env)
    photos = find_photos(args.images.resolve(), args.max_images)
    bodies = [multipart_body(photo, index) for index, photo in enumerate(photos)]
    report = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_info(),
        "settings": {
            "targets": args.targets,
            "concurrency": args.concurrency,
            "duration_s": args.duration,
            "repeats": args.repeats,
            "warmup_s": args.warmup,
            "rss_requests": args.rss_requests,
            "rss_concurrency": RSS_CONCURRENCY,
            "images": str(args.images),
            "photos": len(photos),
            "serve_env": serve_env,
        },
    }
    runs: dict[str, list[dict]] = {target.name: [] for target in targets}
    with tempfile.TemporaryDirectory(prefix="serve-load-") as log_dir:
        for repeat in range(args.repeats):
            if args.repeats > 1:
                progress(f"round {repeat + 1} of {args.repeats}")
            # Rounds interleave the targets, so a change in the machine's load hits them all.
            for target in targets:
                result = run_target(target, bodies, photos, args, Path(log_dir))
                runs[target.name].append(result)
                if repeat > 0:
                    result.pop("memory", None)  # measured in the first round only
    results = {name: median_run(target_runs) for name, target_runs in runs.items()}
    ratios, checks = compare(results)
    report.update(
        targets=results,
        ratios_at_concurrency_8=ratios,
        checks=checks,
        errors=total_errors(results),
        load_average_at_end=[round(x, 2) for x in os.getloadavg()],
    )
    print_report(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"Figures written to {args.out}.")
    sys.exit(1 if report["errors"] else 0)


if __name__ == "__main__":
    main()
