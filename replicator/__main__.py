"""`python -m replicator`."""

from replicator.cli import entry_point

entry_point()
