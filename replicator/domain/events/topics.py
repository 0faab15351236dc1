"""MQTT topic levels: the source-name position of the events topic (`registry/+/events`)."""

from __future__ import annotations

from replicator.errors import ConfigError


def source_from_topic(pattern: str, topic: str) -> str | None:
    """The level of `topic` at the '+' of `pattern` (`registry/+/events`), or None on mismatch."""
    pattern_levels = pattern.split("/")
    topic_levels = topic.split("/")
    if len(pattern_levels) != len(topic_levels) or "+" not in pattern_levels:
        return None
    source: str | None = None
    for expected, actual in zip(pattern_levels, topic_levels, strict=True):
        if expected == "+":
            if source is None:
                source = actual
        elif expected != actual:
            return None
    return source or None


def topic_for_source(pattern: str, source: str) -> str:
    """The concrete topic of `source`: `pattern` with its first '+' replaced by the name."""
    levels = pattern.split("/")
    if "+" not in levels:
        raise ConfigError(
            f"{pattern!r} has no '+' level for the source name", field="mqtt.events_topic"
        )
    levels[levels.index("+")] = source
    return "/".join(levels)
