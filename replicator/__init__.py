"""replicator: replicate container images between OCI registries from registry events."""

__version__ = "0.1.0"
