"""The source-name level of the events topic, both ways."""

from __future__ import annotations

import pytest

from replicator.domain.events.topics import source_from_topic, topic_for_source
from replicator.errors import ConfigError


class TestTopics:
    @pytest.mark.parametrize(
        ("pattern", "topic", "expected"),
        [
            pytest.param("registry/+/events", "registry/use1/events", "use1", id="match"),
            pytest.param("registry/+/events", "registry/use1/other", None, id="other-suffix"),
            pytest.param("registry/+/events", "registry/a/b/events", None, id="extra-level"),
            pytest.param("registry/+/events", "registry//events", None, id="empty-name"),
            pytest.param("registry/events", "registry/events", None, id="no-plus"),
            pytest.param("site/a/+/events", "site/a/use1/events", "use1", id="deeper"),
        ],
    )
    def test_source_from_topic(self, pattern: str, topic: str, expected: str | None) -> None:
        """The source name is the topic level at the pattern's '+'."""
        assert source_from_topic(pattern, topic) == expected

    def test_topic_for_source_round_trips(self) -> None:
        """The bridge's publish topic maps back to the same source name."""
        topic = topic_for_source("registry/+/events", "use1")
        assert topic == "registry/use1/events"
        assert source_from_topic("registry/+/events", topic) == "use1"

    def test_topic_without_plus_is_a_config_error(self) -> None:
        """An events topic with no '+' cannot name sources and is refused as a config error."""
        with pytest.raises(ConfigError):
            topic_for_source("registry/events", "use1")
