"""Prometheus metrics of one app: its own registry, so several apps in one process (tests,
two hub instances) never collide."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class _Readings(Collector):
    """Values owned by other objects (queue lengths, drop counts), read at scrape time."""

    def __init__(self) -> None:
        self.readings: list[tuple[type[Metric], str, str, Callable[[], float]]] = []
        self.labelled: list[tuple[str, str, str, Callable[[], dict[str, float]]]] = []

    def collect(self) -> Iterator[Metric]:
        for family, name, documentation, read in self.readings:
            yield family(name, documentation, value=read())
        for name, documentation, label, read_all in self.labelled:
            gauge = GaugeMetricFamily(name, documentation, labels=[label])
            for value, reading in sorted(read_all().items()):
                gauge.add_metric([value], reading)
            yield gauge


class HttpMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._readings = _Readings()
        self.registry.register(self._readings)
        self._requests = Counter(
            "remotegpu_http_requests", "HTTP requests by route and status",
            ["method", "route", "status"], registry=self.registry,
        )
        self._latency = Histogram(
            "remotegpu_http_request_duration_seconds", "HTTP request latency by route",
            ["method", "route"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self._requests.labels(method, route, str(status)).inc()
        self._latency.labels(method, route).observe(seconds)

    def gauge(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        self._readings.readings.append((GaugeMetricFamily, name, documentation, read))

    def counter(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        self._readings.readings.append((CounterMetricFamily, name, documentation, read))

    def gauges(self, name: str, documentation: str, label: str,
               read: Callable[[], dict[str, float]]) -> None:
        """One gauge per value of ``label``, as ``read`` gives them at scrape time."""
        self._readings.labelled.append((name, documentation, label, read))

    def histogram(self, name: str, documentation: str, labels: list[str],
                  buckets: tuple[float, ...] = _LATENCY_BUCKETS) -> Histogram:
        return Histogram(name, documentation, labels, buckets=buckets, registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
