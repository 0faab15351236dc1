"""domain.events.tag_resolution: what a HEAD of a tag makes of a tag-only push, and what a source
that could not answer does to the message (kept aside with the jobs' backoff, or rejected)."""

from __future__ import annotations

import pytest

from replicator.domain.events import Ignored, IgnoreReason, PushEvent, TagPush
from replicator.domain.events.tag_resolution import (
    TagHead,
    Unresolved,
    after_unresolved,
    resolved_push,
)

DIGEST = "sha256:" + "a" * 64
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
PUSH = TagPush("use1", "team/app", "v1", 1700000000.0, "q-1", "quay")


class TestResolvedPush:
    """resolved_push: the source's answer to a HEAD of the tag -> PushEvent or Ignored."""

    @pytest.mark.parametrize(
        ("head", "expected"),
        [
            pytest.param(
                TagHead(DIGEST, OCI_MANIFEST),
                PushEvent("use1", "team/app", DIGEST, "v1", OCI_MANIFEST, 1700000000.0, "q-1"),
                id="manifest",
            ),
            pytest.param(
                TagHead(DIGEST, ""),
                PushEvent("use1", "team/app", DIGEST, "v1", None, 1700000000.0, "q-1"),
                id="media-type-unsaid",
            ),
            pytest.param(None, Ignored(IgnoreReason.TAG_NOT_FOUND, "q-1"), id="tag-gone"),
            pytest.param(
                TagHead(DIGEST, "application/octet-stream"),
                Ignored(IgnoreReason.UNSUPPORTED_MEDIA_TYPE, "q-1"),
                id="not-a-manifest",
            ),
        ],
    )
    def test_answer(self, head: TagHead | None, expected: PushEvent | Ignored) -> None:
        """The push takes the digest the tag has now; a gone tag or a non-manifest is ignored."""
        assert resolved_push(PUSH, head) == expected


class TestAfterUnresolved:
    """after_unresolved: keep the message aside with the jobs' backoff, or reject it."""

    @pytest.mark.parametrize(
        ("temporary", "attempts", "jitter", "expected"),
        [
            pytest.param(True, 1, 0.0, Unresolved(1.0, "attempt 1 of 3, again in 1s: v1: 503"),
                         id="first-failure-waits-half-of-2s"),
            pytest.param(True, 2, 0.5, Unresolved(3.0, "attempt 2 of 3, again in 3s: v1: 503"),
                         id="second-failure-backs-off"),
            pytest.param(True, 3, 0.0, Unresolved(None, "gave up after 3 attempts: v1: 503"),
                         id="attempts-used-up"),
            pytest.param(False, 1, 0.0, Unresolved(None, "v1: 503"),
                         id="permanent-at-once"),
        ],
    )  # fmt: skip
    def test_decision(
        self, temporary: bool, attempts: int, jitter: float, expected: Unresolved
    ) -> None:
        """A temporary failure with attempts left waits base**attempts (equal jitter); used up
        or permanent, the message is rejected, the reason saying why."""
        decision = after_unresolved(
            error="v1: 503",
            temporary=temporary,
            attempts=attempts,
            max_attempts=3,
            jitter_fraction=jitter,
        )
        assert decision == expected

    def test_backoff_is_capped(self) -> None:
        """However many failures, a kept message waits at most the jobs' cap (300 s)."""
        decision = after_unresolved(
            error="e", temporary=True, attempts=40, max_attempts=50, jitter_fraction=0.999
        )
        assert decision.retry_in is not None
        assert decision.retry_in <= 300.0

    def test_zero_attempts_is_a_caller_bug(self) -> None:
        """A failed read is at least the first: 0 attempts raises."""
        with pytest.raises(ValueError, match="attempts 0"):
            after_unresolved(
                error="e", temporary=True, attempts=0, max_attempts=3, jitter_fraction=0.0
            )
