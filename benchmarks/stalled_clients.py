"""Benchmark: many clients that stall mid-upload, against the service's request-body budget.

    python benchmarks/stalled_clients.py [--clients 1000] [--declared-mb 10] [--sent-mb 9]
        [--model models/export/model.int8.onnx] [--serve-env HOTDOG_BODY_MEMORY_BYTES=...]

Starts ``python -m hotdog.serve`` on 127.0.0.1 with its default limits (10 MiB per upload, a
128 MiB budget for bodies held in memory, a 30 s body deadline), then opens ``--clients``
connections that each declare a ``--declared-mb`` body, send ``--sent-mb`` of it and stall.
While they stall it samples the server's RSS every 100 ms and times a normal photo upload every
half second; then it closes them and measures the RSS again. Prints the figures: RSS before,
at its peak and after, how the stalled clients were answered, and the normal uploads' latency.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from serve_load import cpu_model, free_port, is_ready, rss_mib  # noqa: E402

HOST = "127.0.0.1"
PHOTO = sorted((ROOT / "data" / "sample" / "test" / "hot_dog").glob("*.jpg"))[0]
CHUNK = 64 * 1024


def form(photo: bytes) -> bytes:
    return (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + photo + b"\r\n--b--\r\n"
    )


def head(port: int, size: int) -> bytes:
    return (
        f"POST /predict HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\n"
        f"Content-Length: {size}\r\n\r\n"
    ).encode()


async def stall(port: int, declared: int, sent: int, answers: list[str], stop: asyncio.Event):
    """Send ``sent`` bytes of a ``declared``-byte body, then wait (holding the connection)."""
    try:
        reader, writer = await asyncio.open_connection(HOST, port)
    except OSError as error:
        answers.append(f"connect failed: {type(error).__name__}")
        return
    try:
        writer.write(head(port, declared))
        filler = b"x" * CHUNK
        for start in range(0, sent, CHUNK):
            writer.write(filler[: min(CHUNK, sent - start)])
            await asyncio.wait_for(writer.drain(), 60)
        answer = asyncio.ensure_future(reader.read(200))
        stopped = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({answer, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if answer in done:
            answers.append(answer.result().split(b"\r\n", 1)[0].decode("latin-1") or "closed")
        else:
            answer.cancel()
            answers.append("still stalled")
    except (OSError, TimeoutError) as error:
        answers.append(f"dropped while sending ({type(error).__name__})")
    finally:
        writer.close()


def normal_upload(port: int, body: bytes) -> tuple[float, int]:
    """Seconds and status of one ordinary photo upload (a fresh connection)."""
    started = time.perf_counter()
    with socket.create_connection((HOST, port), timeout=30) as client:
        client.sendall(head(port, len(body)) + body)
        status = int(client.recv(64).split(b" ", 2)[1])
    return time.perf_counter() - started, status


async def attack(args: argparse.Namespace, server: subprocess.Popen, port: int) -> dict:
    body = form(PHOTO.read_bytes())
    declared, sent = int(args.declared_mb * 1e6), int(args.sent_mb * 1e6)
    answers: list[str] = []
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(stall(port, declared, sent, answers, stop)) for _ in range(args.clients)
    ]
    samples: list[float] = []
    uploads: list[tuple[float, int]] = []
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    next_upload = started + 1.0
    while time.monotonic() - started < args.attack_s:
        samples.append(rss_mib(server.pid))
        if time.monotonic() >= next_upload:
            uploads.append(await loop.run_in_executor(None, normal_upload, port, body))
            next_upload = time.monotonic() + 0.5
        await asyncio.sleep(0.1)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"samples": samples, "uploads": uploads, "answers": answers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--declared-mb", type=float, default=10.0)
    parser.add_argument("--sent-mb", type=float, default=9.0)
    parser.add_argument("--attack-s", type=float, default=20.0, help="how long they stall")
    parser.add_argument("--model", default=str(ROOT / "models" / "export" / "model.int8.onnx"))
    parser.add_argument("--serve-env", nargs="*", default=[], help="NAME=VALUE for the server")
    args = parser.parse_args()

    port = free_port()
    env = {
        **os.environ,
        "HOTDOG_MODEL_URI": args.model,
        "HOTDOG_HOST": HOST,
        "HOTDOG_PORT": str(port),
        **dict(item.split("=", 1) for item in args.serve_env),
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "hotdog.serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not is_ready(port):
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("The server did not start; run it by hand to see why.")
            time.sleep(0.1)
        body = form(PHOTO.read_bytes())
        for _ in range(20):
            normal_upload(port, body)
        before = rss_mib(server.pid)
        result = asyncio.run(attack(args, server, port))
        time.sleep(2.0)
        after = rss_mib(server.pid)
        survived = normal_upload(port, body)
    finally:
        server.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(15)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)

    cpu = cpu_model()
    latencies = sorted(seconds for seconds, _ in result["uploads"])
    statuses = sorted({status for _, status in result["uploads"]})
    answers: dict[str, int] = {}
    for answer in result["answers"]:
        answers[answer] = answers.get(answer, 0) + 1
    print(f"CPU: {cpu}, {os.cpu_count()} cores; load average at the end {os.getloadavg()[0]:.1f}")
    print(
        f"{args.clients} clients, each {args.sent_mb:g} MB of a declared {args.declared_mb:g} MB "
        f"body, stalling for {args.attack_s:g} s"
    )
    print(f"server RSS before: {before:.0f} MiB")
    print(f"server RSS peak while they stall: {max(result['samples']):.0f} MiB")
    print(f"server RSS 2 s after they left: {after:.0f} MiB")
    if latencies:
        print(
            f"normal uploads during the attack: {len(latencies)}, statuses {statuses}, "
            f"median {statistics.median(latencies) * 1000:.0f} ms, "
            f"max {latencies[-1] * 1000:.0f} ms"
        )
    print(f"normal upload after: {survived[1]} in {survived[0] * 1000:.0f} ms")
    print("stalled clients were answered: " + ", ".join(f"{k}: {v}" for k, v in answers.items()))


if __name__ == "__main__":
    main()
