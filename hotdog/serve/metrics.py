"""Prometheus metrics of the service, in a registry of its own (one per app)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

# The *_created series double the output and no dashboard here uses them.
disable_created_metrics()

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10)
CONFIDENCE_BUCKETS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


@dataclass
class ServiceMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        registry = self.registry
        self.requests = Counter(
            "hotdog_http_requests",
            "HTTP requests answered, by route template, method and status code.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "hotdog_http_request_duration_seconds",
            "Time from receiving a request to sending its answer, by route and status code.",
            ["route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "hotdog_http_requests_in_flight",
            "Requests being handled right now.",
            registry=registry,
        )
        self.predictions = Counter(
            "hotdog_predictions",
            "Images classified, by predicted class.",
            ["label"],
            registry=registry,
        )
        self.unsure = Counter(
            "hotdog_unsure_predictions",
            "Images answered unsure (probability below the model's threshold); their share rises "
            "when photos unlike the training data arrive.",
            registry=registry,
        )
        self.confidence = Histogram(
            "hotdog_prediction_confidence",
            "Probability of the predicted class; a shift downwards hints at data drift.",
            buckets=CONFIDENCE_BUCKETS,
            registry=registry,
        )
        self.inference = Histogram(
            "hotdog_inference_duration_seconds",
            "Decoding, preprocessing and running the model for one request.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.rejected = Counter(
            "hotdog_rejected_uploads",
            "Uploads refused, by reason (empty, unsupported, too_large, corrupt, ...).",
            ["reason"],
            registry=registry,
        )
        self.body_bytes_held = Gauge(
            "hotdog_request_body_bytes_held",
            "Bytes of request bodies being received, held in memory (HOTDOG_BODY_MEMORY_BYTES "
            "caps them).",
            registry=registry,
        )
        self.model_load = Gauge(
            "hotdog_model_load_seconds",
            "Time taken to fetch, load and warm up the model.",
            registry=registry,
        )
        self.model_info = Gauge(
            "hotdog_model_info",
            "The model being served (value 1), by version and backend.",
            ["version", "backend", "precision"],
            registry=registry,
        )
