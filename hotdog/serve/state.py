"""The state of one running service: settings, metrics, the model once loaded, the workers.

One :class:`ServingState` per app (``app.state.serving``); routes reach it through
:mod:`hotdog.serve.dependencies`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from hotdog.core.errors import HotdogError
from hotdog.core.preprocessing import DataConfig
from hotdog.serve.metrics import ServiceMetrics
from hotdog.serve.middleware import BodyBudget
from hotdog.serve.predictors import load_predictor
from hotdog.serve.refusals import RequestRefusedError
from hotdog.serve.service import ClassifierService, Outcome, SentImage, Upload
from hotdog.serve.settings import Settings

log = logging.getLogger("hotdog.serve")


@dataclass(frozen=True)
class PredictionEvent:
    """One image classified: what a per-prediction hook (a prediction log) is given."""

    model_version: str
    label: str
    probabilities: dict[str, float]
    # Decoding, preprocessing and the model for the request the image came in.
    latency_s: float
    image: SentImage
    # When there are hooks: the pixels the image statistics are computed from, the model's
    # preprocessing (to undo it) and its reduced embedding (see hotdog.monitor.profile).
    thumbnail: np.ndarray | None = None
    data_config: DataConfig | None = None
    embedding: list[float] | None = None


# Called on the event loop for every image classified; must return at once (queue, don't write).
PredictionHook = Callable[[PredictionEvent], None]


def inference_threads(cores: int, threads_per_inference: int) -> int:
    """How many requests are decoded and classified at once: one more than fit the cores."""
    return max(1, cores // max(1, threads_per_inference)) + 1


@dataclass
class ServingState:
    settings: Settings
    metrics: ServiceMetrics = field(default_factory=ServiceMetrics)
    prediction_hooks: Sequence[PredictionHook] = ()
    # Called with the reason if the model cannot be loaded (``python -m hotdog.serve`` exits).
    on_load_failure: Callable[[str], None] | None = None
    service: ClassifierService | None = None
    error: str | None = None
    load_seconds: float | None = None

    def __post_init__(self) -> None:
        self.body_budget = BodyBudget(self.settings.body_memory_bytes)
        self.metrics.body_bytes_held.set_function(lambda: self.body_budget.held)
        # Requests are decoded and classified in these threads, each inference using
        # settings.threads cores: one thread more than the cores can hold keeps every core busy
        # while a thread waits for the GIL between its C calls (measured: +6 % requests/s at
        # concurrency 8 on 2 cores, docs/serving.md). The pool also bounds the memory held by
        # images being decoded at once.
        self.executor = ThreadPoolExecutor(
            inference_threads(os.cpu_count() or 1, self.settings.threads),
            thread_name_prefix="hotdog-inference",
        )

    def _load(self) -> ClassifierService:
        started = time.perf_counter()
        service = ClassifierService(
            load_predictor(self.settings),
            self.settings.max_pixels,
            describe_inputs=bool(self.prediction_hooks),
        )
        service.warm_up()
        self.load_seconds = time.perf_counter() - started
        return service

    async def load_in_background(self) -> None:
        """Load and warm up the model; on failure, keep the reason for ``/ready``."""
        settings = self.settings
        try:
            service = await asyncio.get_running_loop().run_in_executor(self.executor, self._load)
        except HotdogError as error:
            self.error = str(error)
        except Exception as error:  # report, don't die silently in a task
            log.exception("loading the model failed")
            self.error = (
                f"Loading {settings.model_location} failed ({type(error).__name__}: {error})."
            )
        else:
            self.service = service
            self.metrics.model_load.set(self.load_seconds or 0.0)
            precision = service.predictor.metadata.precision
            self.metrics.model_info.labels(service.version, settings.backend, precision).set(1)
            log.info(
                "model %s ready in %.2f s (%s backend)",
                service.version,
                self.load_seconds,
                settings.backend,
            )
            return
        log.error("error: %s", self.error)
        if self.on_load_failure is not None:
            self.on_load_failure(self.error)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    def ready_service(self) -> ClassifierService:
        """The loaded service, or a 503 refusal saying why there is none yet."""
        if self.service is None:
            message = self.error or "The model is still loading; retry in a few seconds."
            raise RequestRefusedError(503, message, "not_ready")
        return self.service

    async def classify(self, uploads: list[Upload]) -> tuple[list[Outcome], float]:
        """Outcomes in upload order and the seconds spent, off the event loop, within the
        timeout; recorded in the metrics and handed to the prediction hooks."""
        service = self.ready_service()
        loop = asyncio.get_running_loop()
        timeout_s = self.settings.timeout_s
        try:
            outcomes, seconds = await asyncio.wait_for(
                loop.run_in_executor(self.executor, service.classify, uploads), timeout_s
            )
        except TimeoutError:
            raise RequestRefusedError(
                503,
                f"The model did not answer within {timeout_s:g} s; the server is "
                "overloaded, retry shortly.",
                "timeout",
            ) from None
        self.metrics.inference.observe(seconds)
        for outcome in outcomes:
            if outcome.prediction is not None:
                self.metrics.predictions.labels(outcome.prediction["label"]).inc()
                if outcome.prediction["unsure"]:
                    self.metrics.unsure.inc()
                self.metrics.confidence.observe(outcome.prediction["probability"])
                self.after_prediction(service, outcome, seconds)
            elif outcome.error is not None:
                self.metrics.rejected.labels(outcome.error.kind).inc()
        return outcomes, seconds

    def after_prediction(
        self, service: ClassifierService, outcome: Outcome, seconds: float
    ) -> None:
        """The one place each classified image passes: hand it to the prediction hooks."""
        if not self.prediction_hooks or outcome.prediction is None or outcome.image is None:
            return
        event = PredictionEvent(
            model_version=service.version,
            label=outcome.prediction["label"],
            probabilities=outcome.prediction["probabilities"],
            latency_s=seconds,
            image=outcome.image,
            thumbnail=outcome.thumbnail,
            data_config=service.predictor.metadata.data_config,
            embedding=outcome.embedding,
        )
        for hook in self.prediction_hooks:
            hook(event)
