"""The Prometheus registry every process of ours exposes its metrics on."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, disable_created_metrics
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector


def new_registry() -> CollectorRegistry:
    """A registry of our own with what Prometheus's default one has: process_* (CPU, memory,
    open files) and python_* (version, garbage collector); and no `*_created` series, which in
    the text format are a gauge family beside every counter and histogram, doubling the
    series for nothing Prometheus uses."""
    disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry
