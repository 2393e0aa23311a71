"""The service's prediction log: every prediction as a JSON line, written off the request path.

A request only puts a small dict and a thumbnail on a bounded queue (``put_nowait``: never
blocks). One background thread computes the image statistics, turns the queue into records,
writes them in batches to the sink and keeps the live drift gauges. A full queue or a failing
sink drops records and counts them in ``/metrics``; the request is answered either way.
``close()`` (at shutdown) drains the queue and writes what is left.

Sinks: a local folder (default ``logs/predictions``), one ``YYYY-MM-DD/`` folder per day and one
file per process; or a ``gs://bucket/prefix``, where objects cannot be appended to, so each batch
is a new object ``YYYY-MM-DD/HHMMSS-<id>.jsonl``. Day folders older than the retention are deleted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import queue
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hotdog.core.cli import is_url
from hotdog.core.errors import HotdogError
from hotdog.core.preprocessing import DataConfig
from hotdog.monitor.profile import prediction_record, thumbnail_statistics

log = logging.getLogger("hotdog.monitor")


@dataclass(frozen=True)
class PredictionLogSettings:
    """``HOTDOG_PREDICTION_LOG*`` and ``HOTDOG_DRIFT_*`` environment variables."""

    location: str | None = "logs/predictions"  # a folder or gs:// prefix; None: off
    queue_size: int = 2_000  # records; each holds a ~37 KB thumbnail until the writer takes it
    batch_size: int = 1_000  # records per gs:// object at most
    flush_seconds: float = 10.0  # a batch is written at least this often
    retention_days: int = 30
    keep_images: bool = False  # also store the uploaded bytes (off: photos may be personal)
    drift_window: int = 200  # predictions in the live drift test
    drift_interval_seconds: float = 30.0  # how often the live test runs at most

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> PredictionLogSettings:
        env = os.environ if environ is None else environ
        defaults = cls()
        location = env.get("HOTDOG_PREDICTION_LOG", defaults.location or "").strip()
        values: dict[str, Any] = {
            "location": None if location.lower() in ("", "off", "false", "0") else location
        }
        if values["location"]:
            check_location(values["location"])
        for name, key, kind in (
            ("queue_size", "HOTDOG_PREDICTION_LOG_QUEUE", int),
            ("batch_size", "HOTDOG_PREDICTION_LOG_BATCH", int),
            ("flush_seconds", "HOTDOG_PREDICTION_LOG_FLUSH_SECONDS", float),
            ("retention_days", "HOTDOG_PREDICTION_LOG_RETENTION_DAYS", int),
            ("drift_window", "HOTDOG_DRIFT_WINDOW", int),
            ("drift_interval_seconds", "HOTDOG_DRIFT_INTERVAL_SECONDS", float),
        ):
            if key in env:
                try:
                    values[name] = kind(env[key])
                    if not 0 < values[name] < math.inf:  # also refuses nan
                        raise ValueError
                except ValueError:
                    raise HotdogError(
                        f"{key}={env[key]!r} is not a positive {kind.__name__}; set it to one "
                        f"or unset it (default {getattr(defaults, name)})."
                    ) from None
        images = env.get("HOTDOG_PREDICTION_LOG_IMAGES", "false").strip().lower()
        if images not in ("true", "false", "1", "0"):
            raise HotdogError(f"HOTDOG_PREDICTION_LOG_IMAGES={images!r} must be true or false.")
        values["keep_images"] = images in ("true", "1")
        return cls(**values)


# How long the writer lets records gather between two drains of the queue.
DRAIN_SECONDS = 0.2


@dataclass
class Pending:
    """What a request hands over: small, already-computed values and a 37 KB thumbnail (never
    the decoded image)."""

    model_version: str
    probabilities: dict[str, float]
    statistics: dict[str, float]
    embedding: list[float] | None
    width: int | None
    height: int | None
    image_format: str | None
    latency_ms: float | None
    time: datetime = field(default_factory=lambda: datetime.now(UTC))
    image: bytes | None = None
    # The pixels the statistics are computed from (hotdog.monitor.profile.thumbnail) and the
    # preprocessing to undo: the writer fills ``statistics`` from them, for a batch at once, and
    # lets them go.
    thumbnail: np.ndarray | None = None
    data_config: DataConfig | None = None


class Sink(Protocol):
    def write(self, day: str, lines: list[str], images: dict[str, bytes]) -> None: ...
    def delete_days_before(self, day: str) -> None: ...


class LocalSink:
    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self.file_name = f"predictions-{os.getpid()}.jsonl"

    def write(self, day: str, lines: list[str], images: dict[str, bytes]) -> None:
        target = self.folder / day
        target.mkdir(parents=True, exist_ok=True)
        for name, data in images.items():
            (target / "images").mkdir(exist_ok=True)
            (target / "images" / name).write_bytes(data)
        with (target / self.file_name).open("a") as file:
            file.write("".join(lines))

    def delete_days_before(self, day: str) -> None:
        import shutil

        if self.folder.is_dir():
            for child in self.folder.iterdir():
                if child.is_dir() and _is_day(child.name) and child.name < day:
                    shutil.rmtree(child, ignore_errors=True)


class GcsSink:
    """Batched objects under a ``gs://`` prefix (through gcsfs, like the model store)."""

    def __init__(self, prefix: str) -> None:
        import fsspec

        self.prefix = prefix.rstrip("/")
        self.fs = fsspec.filesystem("gs")

    def write(self, day: str, lines: list[str], images: dict[str, bytes]) -> None:
        for name, data in images.items():
            self.fs.pipe_file(f"{self.prefix}/{day}/images/{name}", data)
        stamp = datetime.now(UTC).strftime("%H%M%S")
        name = f"{self.prefix}/{day}/{stamp}-{uuid.uuid4().hex[:12]}.jsonl"
        self.fs.pipe_file(name, "".join(lines).encode())

    def delete_days_before(self, day: str) -> None:
        try:
            children = self.fs.ls(self.prefix, detail=False)
        except FileNotFoundError:
            return
        for child in children:
            name = child.rstrip("/").rsplit("/", 1)[-1]
            if _is_day(name) and name < day:
                self.fs.rm(child, recursive=True)


def _is_day(name: str) -> bool:
    try:
        datetime.strptime(name, "%Y-%m-%d")
    except ValueError:
        return False
    return True


def check_location(location: str) -> None:
    """Refuse, in one sentence, a prediction log location no sink can write to."""
    if location.startswith("gs://"):
        return
    if is_url(location):
        raise HotdogError(
            f"HOTDOG_PREDICTION_LOG={location} is neither a local folder nor a gs:// prefix."
        )
    if Path(location).exists() and not Path(location).is_dir():
        raise HotdogError(
            f"HOTDOG_PREDICTION_LOG={location} is a file; set it to a folder, a gs:// prefix or "
            "off."
        )


def open_sink(location: str) -> Sink:
    check_location(location)
    if location.startswith("gs://"):
        return GcsSink(location)
    return LocalSink(location)


class LiveDrift:
    """The inputs of the live drift gauges: the last predictions' confidence and embeddings,
    tested against the reference profile's embeddings at most every ``interval`` seconds."""

    def __init__(self, reference: np.ndarray | None, window: int, interval: float) -> None:
        self.reference = reference
        self.embeddings: deque[list[float]] = deque(maxlen=window)
        self.confidences: deque[float] = deque(maxlen=window)
        self.interval = interval
        self.last_test = 0.0

    def add(self, confidence: float, embedding: list[float] | None) -> None:
        self.confidences.append(confidence)
        if embedding is not None:
            self.embeddings.append(embedding)

    def due(self) -> bool:
        full = len(self.embeddings) == self.embeddings.maxlen
        return (
            self.reference is not None
            and full
            and time.monotonic() - self.last_test >= self.interval
        )

    def set_reference(self, reference: list[dict[str, Any]]) -> None:
        rows = [record.get("embedding") for record in reference]
        if rows and all(isinstance(row, list) for row in rows):
            self.reference = np.asarray(rows, dtype=np.float64)

    def test(self) -> tuple[float, float, float]:
        """MMD statistic, permutation p-value and effect-size floor of the window against the
        reference (the same kernel test and floor as the drift report's)."""
        from hotdog.monitor.drift import mmd_test_with_floor

        assert self.reference is not None  # due() says so
        self.last_test = time.monotonic()
        return mmd_test_with_floor(self.reference, np.asarray(self.embeddings), permutations=200)


class PredictionLog:
    """Bounded queue + one writer thread; see the module's docstring."""

    def __init__(
        self,
        settings: PredictionLogSettings,
        *,
        registry: Any,
        reference: list[dict[str, Any]] | None = None,
        reference_uri: str | None = None,
        sink: Sink | None = None,
    ) -> None:
        """``reference`` (records) or ``reference_uri`` (read by the writer thread when the first
        prediction arrives, so a slow bucket never delays start-up) feeds the live drift test."""
        from prometheus_client import Counter, Gauge

        self.settings = settings
        self.reference_uri = reference_uri
        self.sink = sink or (open_sink(settings.location) if settings.location else None)
        self.queue: queue.Queue[Pending | None] = queue.Queue(settings.queue_size)
        self.dropped = Counter(
            "hotdog_prediction_log_dropped",
            "Prediction records not written, by reason (queue_full, sink_error).",
            ["reason"],
            registry=registry,
        )
        for reason in ("queue_full", "sink_error"):  # exported at 0, so rate() sees the first
            self.dropped.labels(reason)
        self.written = Counter(
            "hotdog_prediction_log_written", "Prediction records written.", registry=registry
        )
        Gauge(
            "hotdog_prediction_log_queue",
            "Prediction records waiting to be written.",
            registry=registry,
        ).set_function(self.queue.qsize)
        self.confidence_mean = Gauge(
            "hotdog_confidence_rolling_mean",
            "Mean probability of the predicted class over the last HOTDOG_DRIFT_WINDOW "
            "predictions.",
            registry=registry,
        )
        self.reference_confidence = Gauge(
            "hotdog_reference_confidence_mean",
            "Mean probability of the predicted class on the reference profile.",
            registry=registry,
        )
        self.drift_p_value = Gauge(
            "hotdog_drift_p_value",
            "p-value of the kernel (MMD) test of the last predictions' embeddings against the "
            "reference; low means the inputs drifted. 1 until a full window was tested.",
            registry=registry,
        )
        self.drift_statistic = Gauge(
            "hotdog_drift_mmd",
            "Squared MMD between the last predictions' embeddings and the reference.",
            registry=registry,
        )
        self.drift_floor = Gauge(
            "hotdog_drift_mmd_floor",
            "Effect-size floor of hotdog_drift_mmd: the 95th percentile of the squared MMD "
            "between two random halves of the reference. A drift alert needs the MMD above it.",
            registry=registry,
        )
        self.drift_p_value.set(1.0)
        self.live = LiveDrift(None, settings.drift_window, settings.drift_interval_seconds)
        if reference:
            self._use_reference(reference)
        self.last_retention_day = ""
        self.thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self.thread.start()

    def _use_reference(self, reference: list[dict[str, Any]]) -> None:
        self.reference_confidence.set(
            float(np.mean([max(r["probabilities"].values()) for r in reference]))
        )
        self.live.set_reference(reference)

    def _load_reference(self, model_version: str) -> None:
        """The served model's reference profile, if it has one; live drift stays off if not."""
        uri, self.reference_uri = self.reference_uri, None
        if uri is None:
            return
        try:
            from hotdog.serve.model_store import read_bytes

            lines = read_bytes(uri).decode().splitlines()
            records = [json.loads(line) for line in lines if line.strip()]
        except Exception as error:  # no reference: log predictions anyway
            log.warning("prediction log: no live drift gauge, %s is unusable (%s)", uri, error)
            return
        versions = {record.get("model_version") for record in records}
        if versions != {model_version}:
            log.warning(
                "prediction log: no live drift gauge, %s is for %s, not %s",
                uri,
                ", ".join(map(str, versions)),
                model_version,
            )
            return
        self._use_reference(records)

    def hook(self, event: Any) -> None:
        """A prediction hook for the service (``hotdog.serve.state.PredictionEvent``)."""
        image = event.image
        self.record(
            Pending(
                model_version=event.model_version,
                probabilities=event.probabilities,
                statistics={},
                thumbnail=event.thumbnail,
                data_config=event.data_config,
                embedding=event.embedding,
                width=image.width if image else None,
                height=image.height if image else None,
                image_format=image.format if image else None,
                latency_ms=event.latency_s * 1000,
            )
        )

    # ------------------------------------------------------------ request side
    def record(self, pending: Pending) -> None:
        """Hand over one prediction; never blocks, never raises."""
        try:
            self.queue.put_nowait(pending)
        except queue.Full:
            self.dropped.labels("queue_full").inc()

    def close(self, timeout: float = 10.0) -> None:
        """Write everything queued, then stop the writer (at shutdown)."""
        with contextlib.suppress(queue.Full):
            self.queue.put(None, timeout=timeout)
        self.thread.join(timeout)

    # ------------------------------------------------------------ writer thread
    def _run(self) -> None:
        batch: list[Pending] = []
        deadline = time.monotonic() + self.settings.flush_seconds
        while True:
            room = self.settings.batch_size - len(batch)  # batches of exactly batch_size
            items = self._take(room, timeout=max(deadline - time.monotonic(), 0.01))
            stop = None in items
            arrived = [item for item in items if item is not None]
            batch += arrived
            self._observe(arrived)
            if stop:
                self._flush(batch)
                return
            if len(batch) >= self.settings.batch_size or time.monotonic() >= deadline:
                self._flush(batch)
                batch = []
                deadline = time.monotonic() + self.settings.flush_seconds
            if arrived and len(items) < room:
                # The queue is drained: let records gather. One wake-up of this thread per
                # DRAIN_SECONDS, not one per request, keeps it off the GIL while requests are
                # being served.
                time.sleep(DRAIN_SECONDS)

    def _take(self, most: int, timeout: float) -> list[Pending | None]:
        """Up to ``most`` queued items, waiting up to ``timeout`` for the first."""
        try:
            items = [self.queue.get(timeout=timeout)]
        except queue.Empty:
            return []
        while len(items) < most:
            try:
                items.append(self.queue.get_nowait())
            except queue.Empty:
                break
        return items

    def _observe(self, items: list[Pending]) -> None:
        if not items:
            return
        _fill_statistics(items)
        if self.reference_uri is not None:
            self._load_reference(items[0].model_version)
        for item in items:
            self.live.add(max(item.probabilities.values()), item.embedding)
        self.confidence_mean.set(float(np.mean(self.live.confidences)))
        if self.live.due():
            statistic, p_value, floor = self.live.test()
            self.drift_statistic.set(statistic)
            self.drift_p_value.set(p_value)
            self.drift_floor.set(floor)

    def _flush(self, batch: list[Pending]) -> None:
        if not batch or self.sink is None:
            return
        by_day: dict[str, tuple[list[str], dict[str, bytes]]] = {}
        for item in batch:
            record = prediction_record(
                model_version=item.model_version,
                class_names=list(item.probabilities),
                probabilities=list(item.probabilities.values()),
                statistics=item.statistics,
                embedding=item.embedding,
                width=item.width,
                height=item.height,
                image_format=item.image_format,
                latency_ms=item.latency_ms,
                time=item.time,
            )
            record["id"] = uuid.uuid4().hex
            lines, images = by_day.setdefault(item.time.strftime("%Y-%m-%d"), ([], {}))
            if self.settings.keep_images and item.image is not None:
                record["image"] = f"images/{record['id']}"
                images[record["id"]] = item.image
            lines.append(json.dumps(record, separators=(",", ":")) + "\n")
        for day, (lines, images) in by_day.items():
            try:
                self.sink.write(day, lines, images)
                self.written.inc(len(lines))
            except Exception as error:  # any sink failure: count, log once per batch, go on
                self.dropped.labels("sink_error").inc(len(lines))
                log.warning("prediction log: %d records dropped (%s)", len(lines), error)
        self._apply_retention()

    def _apply_retention(self) -> None:
        today = datetime.now(UTC).strftime("%Y-%m-%d")
        if today == self.last_retention_day or self.sink is None:
            return
        self.last_retention_day = today
        oldest = (datetime.now(UTC) - timedelta(days=self.settings.retention_days)).strftime(
            "%Y-%m-%d"
        )
        try:
            self.sink.delete_days_before(oldest)
        except Exception as error:  # retention is housekeeping: never stop logging for it
            log.warning("prediction log: retention failed (%s)", error)


def _fill_statistics(items: list[Pending]) -> None:
    """Compute the image statistics of the items that came with a thumbnail, one NumPy pass per
    model preprocessing and thumbnail size, and drop the thumbnails."""
    groups: dict[tuple[Any, ...], list[tuple[Pending, np.ndarray]]] = {}
    for item in items:
        if item.thumbnail is not None and item.data_config is not None:
            key = (item.data_config, item.thumbnail.shape)
            groups.setdefault(key, []).append((item, item.thumbnail))
    for (data_config, _), members in groups.items():
        thumbnails = np.stack([pixels for _, pixels in members])
        rows = thumbnail_statistics(thumbnails, data_config)
        for (member, _), statistics in zip(members, rows, strict=True):
            member.statistics, member.thumbnail = statistics, None


def open_prediction_log(
    settings: PredictionLogSettings, metrics: Any, serve_settings: Any
) -> PredictionLog | None:
    """The service's prediction log (None when turned off), its gauges in the service's
    registry, its live drift reference the one exported next to the served model."""
    if settings.location is None:
        return None
    from hotdog.monitor.profile import reference_uri

    return PredictionLog(
        settings,
        registry=metrics.registry,
        reference_uri=reference_uri(serve_settings.model_uri),
    )
