"""Whether a job still follows the source: tag PUTs, deletes, and what identifies a job."""

from __future__ import annotations

import pytest

from replicator.domain.jobs.freshness import (
    MAX_ORIGIN_CHARS,
    TAG_LINK_GRACE_SECONDS,
    Untagged,
    Verdict,
    absent_tag_grace,
    check_delete,
    check_tag,
    check_vanished,
    event_origin,
    keep_untagged,
    lost_delete_origin,
    untagged_copy,
)

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
IMAGE = "prod/app"


class TestCheckTag:
    @pytest.mark.parametrize(
        ("digest", "source_digest", "follow", "verdict"),
        [
            pytest.param(A, A, False, Verdict.PROCEED, id="source-still-names-it"),
            pytest.param(A, A, True, Verdict.PROCEED, id="still-names-it-deletes-follow"),
            pytest.param(A, None, False, Verdict.PROCEED, id="tag-gone-deletes-not-replicated"),
            pytest.param(A, None, True, Verdict.SUPERSEDED, id="tag-gone-deletes-replicated"),
            pytest.param(A, B, False, Verdict.SUPERSEDED, id="pushed-again-since"),
            pytest.param(B, A, True, Verdict.SUPERSEDED, id="rolled-back-since"),
        ],
    )
    def test_verdict(
        self, digest: str, source_digest: str | None, follow: bool, verdict: Verdict
    ) -> None:
        """The tag is set only when the source's tag names the job's digest, or is gone and
        its delete is not replicated (the destination keeps what was pushed, as in ECR)."""
        found = check_tag(
            image=IMAGE, tag="v1", digest=digest, source_digest=source_digest, deletes_follow=follow
        )
        assert found.verdict is verdict

    def test_superseded_names_both_digests(self) -> None:
        """The recorded reason says what the tag names now and what the job had."""
        reason = check_tag(image=IMAGE, tag="v1", digest=A, source_digest=B).reason
        assert f"{IMAGE}:v1" in reason
        assert A in reason
        assert B in reason


class TestKeepUntagged:
    @pytest.mark.parametrize(
        ("follow", "at_source", "keep"),
        [
            pytest.param(True, True, True, id="tag-moved-on-image-still-at-source"),
            pytest.param(True, False, False, id="image-deleted-and-deletes-replicated"),
            pytest.param(False, False, True, id="image-deleted-deletes-not-replicated"),
            pytest.param(False, True, True, id="deletes-not-replicated"),
        ],
    )
    def test_verdict(self, follow: bool, at_source: bool, keep: bool) -> None:
        """A job that may not set its tag puts its image by digest unless the source deleted
        the image itself and that delete is replicated (found by the history checker: the
        delete's job ran first, then the copy put the deleted image back untagged)."""
        assert keep_untagged(deletes_follow=follow, source_has_digest=at_source) is keep


class TestCheckVanished:
    @pytest.mark.parametrize(
        ("at_source", "verdict"),
        [
            pytest.param(False, Verdict.SUPERSEDED, id="deleted-at-the-source-since-the-push"),
            pytest.param(True, Verdict.PROCEED, id="still-served-something-else-missing"),
        ],
    )
    def test_verdict(self, at_source: bool, verdict: Verdict) -> None:
        """A copy that found its image missing at the source is overtaken by the delete when
        the source no longer serves the digest (nothing to copy, ever: not a failure counted
        in the recovery point for good); the failure stands when it still serves it."""
        found = check_vanished(image=IMAGE, digest=A, source_has_digest=at_source)
        assert found.verdict is verdict
        assert (A in found.reason) is (verdict is Verdict.SUPERSEDED)


class TestCheckDelete:
    @pytest.mark.parametrize(
        ("digest", "tag", "source_digest", "verdict"),
        [
            pytest.param(A, None, None, Verdict.PROCEED, id="manifest-gone"),
            pytest.param(A, None, A, Verdict.REFUSED, id="forged-manifest-delete"),
            pytest.param(A, "v1", None, Verdict.PROCEED, id="tag-gone"),
            pytest.param(None, "v1", None, Verdict.PROCEED, id="tag-only-gone"),
            pytest.param(A, "v1", A, Verdict.REFUSED, id="forged-tag-delete"),
            pytest.param(None, "v1", A, Verdict.REFUSED, id="forged-tag-only-delete"),
            pytest.param(A, "v1", B, Verdict.SUPERSEDED, id="tag-pushed-again-after-delete"),
        ],
    )
    def test_verdict(
        self, digest: str | None, tag: str | None, source_digest: str | None, verdict: Verdict
    ) -> None:
        """A delete proceeds only when the source answers 404 for what it names; a tag pushed
        again since is superseded; anything still served is refused."""
        decided = check_delete(image=IMAGE, digest=digest, tag=tag, source_digest=source_digest)
        assert decided.verdict is verdict
        assert bool(decided.reason) is (verdict is not Verdict.PROCEED)

    def test_refusal_says_what_the_source_still_serves(self) -> None:
        """The refusal names the image, its digest at the source, and that nothing was deleted."""
        reason = check_delete(image=IMAGE, digest=A, tag=None, source_digest=A).reason
        assert f"{IMAGE}@{A}" in reason
        assert "404" in reason
        assert "nothing deleted" in reason


class TestEventOrigin:
    @pytest.mark.parametrize(
        "event_id",
        [
            pytest.param("fccb3770-1813-4a5c-8403-b423196a76b6", id="distribution-uuid"),
            pytest.param("x" * MAX_ORIGIN_CHARS, id="at-the-limit"),
        ],
    )
    def test_short_ids_are_kept(self, event_id: str) -> None:
        """An id up to MAX_ORIGIN_CHARS is the origin as it is, readable in the journal."""
        assert event_origin(event_id) == event_id

    @pytest.mark.parametrize(
        "event_id",
        [
            pytest.param("x" * (MAX_ORIGIN_CHARS + 1), id="one-over"),
            pytest.param("y" * 1_000_000, id="a-megabyte"),
            pytest.param("sha256:" + "0" * 64, id="looks-hashed"),
            pytest.param("lost-delete:e1@1.000000", id="looks-like-a-replayed-delete"),
        ],
    )
    def test_long_or_hash_like_ids_are_hashed(self, event_id: str) -> None:
        """A longer id (or one shaped like a hashed origin or a replayed delete's) is kept as
        its SHA-256: bounded, and distinct from every id kept as it is and from every origin
        a reconcile gives the delete jobs it replays."""
        origin = event_origin(event_id)
        assert origin.startswith("sha256:")
        assert len(origin) == len("sha256:") + 64
        assert origin != event_id
        assert event_origin(event_id) == origin

    def test_distinct_ids_stay_distinct(self) -> None:
        """Two events, hashed or not, never share an origin."""
        ids = ["e1", "e2", "z" * 500, "z" * 501]
        assert len({event_origin(i) for i in ids}) == len(ids)

    @pytest.mark.parametrize(
        ("copy_origin", "finished", "expected"),
        [
            ("e1", 1.5, "lost-delete:e1@1.500000"),
            ("", None, "lost-delete:"),
            ("x" * MAX_ORIGIN_CHARS, 2.0, None),
        ],
        ids=["readable", "unfinished-scan-copy", "too-long-hashed"],
    )
    def test_lost_delete_origin_names_the_copy_it_undoes(
        self, copy_origin: str, finished: float | None, expected: str | None
    ) -> None:
        """A replayed delete's origin names the copy it undoes (its event and finish time),
        within MAX_ORIGIN_CHARS: the same copy gives the same origin on every pass, another
        copy of the image another one."""
        origin = lost_delete_origin(copy_origin, finished)
        assert len(origin) <= MAX_ORIGIN_CHARS
        assert origin.startswith("lost-delete:")
        if expected is not None:
            assert origin == expected
        assert origin != lost_delete_origin(copy_origin, (finished or 0.0) + 1.0)

    def test_empty_id_is_a_bug(self) -> None:
        """The parser never lets an empty id through; being given one is a caller bug."""
        with pytest.raises(ValueError, match="never empty"):
            event_origin("")


class TestAbsentTagGrace:
    @pytest.mark.parametrize(
        ("from_push", "since_event", "grace"),
        [
            pytest.param(True, 0.0, TAG_LINK_GRACE_SECONDS, id="push-just-arrived"),
            pytest.param(True, 0.5, TAG_LINK_GRACE_SECONDS - 0.5, id="push-half-a-second-ago"),
            pytest.param(True, TAG_LINK_GRACE_SECONDS, 0.0, id="push-at-the-bound"),
            pytest.param(True, 60.0, 0.0, id="push-long-ago-resumed"),
            pytest.param(False, 0.0, 0.0, id="scan-read-the-tag-itself"),
        ],
    )
    def test_grace(self, from_push: bool, since_event: float, grace: float) -> None:
        """A push's job asks again for a missing tag until TAG_LINK_GRACE_SECONDS after its
        event (distribution notifies before it links the tag); a scan's job, which read the
        tag linked, and a push's job that long after its event take a missing tag at once."""
        assert absent_tag_grace(from_push=from_push, since_event=since_event) == pytest.approx(
            grace
        )


class TestUntaggedCopy:
    @pytest.mark.parametrize(
        ("from_push", "follow", "untagged"),
        [
            pytest.param(True, False, Untagged.DIGEST, id="push-deletes-not-replicated"),
            pytest.param(True, True, Untagged.ASK, id="push-deletes-replicated"),
            pytest.param(False, False, Untagged.NOTHING, id="scan-deletes-not-replicated"),
            pytest.param(False, True, Untagged.NOTHING, id="scan-deletes-replicated"),
        ],
    )
    def test_what_is_put(self, from_push: bool, follow: bool, untagged: Untagged) -> None:
        """A superseded push's job still puts its image by digest (asking the source first
        where deletes are replicated); a scan's job puts nothing (active-active seed 3105:
        its image by digest undid a delete at the other side)."""
        assert untagged_copy(from_push=from_push, deletes_follow=follow) is untagged
