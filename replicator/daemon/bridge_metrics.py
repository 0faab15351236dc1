"""Prometheus metrics of the webhook bridge, on a registry of its own."""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

from prometheus_client import Counter, Gauge, Histogram, generate_latest

from replicator.daemon.prometheus import new_registry

# Publishing waits for the broker's PUBACK: about a millisecond on loopback, tens on a LAN;
# anything near the HTTP handler timeout (30 s) is a broker in trouble.
PUBLISH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0)
# The `source` label of requests to a name that is not configured: one value, so a scanner
# cannot grow the metric without bound.
UNKNOWN = "unknown"


class Outcome(StrEnum):
    """What the bridge did with one request."""

    PUBLISHED = "published"  # on the bus, acknowledged by the broker (2xx)
    IGNORED = "ignored"  # understood, nothing to replicate (2xx)
    REJECTED = "rejected"  # a body it cannot use (400, 413, 415)
    UNAUTHORIZED = "unauthorized"  # 401
    UNKNOWN_SOURCE = "unknown_source"  # 404
    UNAVAILABLE = "unavailable"  # the broker did not acknowledge (503)


class BridgeMetrics:
    """replicator_bridge_*: requests, publish latency, broker connection."""

    def __init__(self, broker_connected: Callable[[], bool]) -> None:
        # process_* and python_* as on the daemon's; no *_created series.
        self.registry = new_registry()
        self.requests = Counter(
            "replicator_bridge_requests_total",
            "Webhook requests by source, body format and outcome",
            ["source", "format", "outcome"],
            registry=self.registry,
        )
        self.publish_duration = Histogram(
            "replicator_bridge_publish_duration_seconds",
            "From publishing a normalised webhook to the broker's acknowledgement",
            buckets=PUBLISH_BUCKETS,
            registry=self.registry,
        )
        self.broker_connected = Gauge(
            "replicator_bridge_broker_connected",
            "1 while the bridge is connected to the MQTT broker",
            registry=self.registry,
        )
        self.broker_connected.set_function(lambda: float(broker_connected()))

    def count(self, source: str, format_name: str, outcome: Outcome) -> None:
        """Count one request."""
        self.requests.labels(source=source, format=format_name, outcome=outcome.value).inc()

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)
