"""Delete replication's decision: what a delete job deletes at its destination."""

from __future__ import annotations

import pytest

from replicator.domain.jobs.deletes import (
    DeleteAction,
    plan_delete,
    plan_untag_unsupported,
    waits_for_copy,
)

OLD = "sha256:" + "a" * 64
NEW = "sha256:" + "b" * 64


@pytest.mark.parametrize(
    ("digest", "tag", "tagged", "action", "reference"),
    [
        (OLD, None, None, DeleteAction.MANIFEST, OLD),
        (OLD, "v1", OLD, DeleteAction.TAG, "v1"),
        ("", "v1", NEW, DeleteAction.TAG, "v1"),
        (OLD, "v1", NEW, DeleteAction.SKIP, ""),
        (OLD, "v1", None, DeleteAction.SKIP, ""),
        ("", "v1", None, DeleteAction.SKIP, ""),
        ("", None, None, DeleteAction.REFUSE, ""),
    ],
    ids=[
        "digest-deletes-manifest",
        "tag-still-on-deleted-digest",
        "tag-without-digest",
        "tag-moved-on",
        "tag-gone",
        "tag-gone-no-digest",
        "neither",
    ],
)
def test_plan_delete(
    digest: str, tag: str | None, tagged: str | None, action: DeleteAction, reference: str
) -> None:
    """A digest deletes its manifest; a tag only itself, and only while it names the image."""
    deletion = plan_delete(digest=digest, tag=tag, tagged=tagged)
    assert (deletion.action, deletion.reference) == (action, reference)
    assert bool(deletion.reason) == (action in (DeleteAction.SKIP, DeleteAction.REFUSE))


@pytest.mark.parametrize(
    ("others", "action"),
    [
        ({}, DeleteAction.MANIFEST),
        ({"v2": NEW, "gone": None}, DeleteAction.MANIFEST),
        ({"latest": OLD, "v2": NEW}, DeleteAction.REFUSE),
    ],
    ids=["last-tag", "other-tags-elsewhere", "shared-with-latest"],
)
def test_untag_unsupported_deletes_only_the_last_tag(
    others: dict[str, str | None], action: DeleteAction
) -> None:
    """Without tag deletion, the manifest goes only when no other tag names it (as ECR)."""
    deletion = plan_untag_unsupported(tag="v1", tagged=OLD, others=others)
    assert deletion.action is action
    if action is DeleteAction.MANIFEST:
        assert deletion.reference == OLD
    else:
        assert "latest" in deletion.reason
        assert "left in place" in deletion.reason


# (delete digest, delete tag, copy digest, copy tag, waits): a delete waits for a copy in
# flight that puts what it deletes (the manifest, or the tag), never for another image's.
FENCES = [
    (OLD, None, OLD, "v1", True),
    (OLD, None, OLD, None, True),
    (OLD, "v1", OLD, "v1", True),
    (OLD, "v1", NEW, "v1", True),
    ("", "v1", NEW, "v1", True),
    (OLD, "v1", OLD, "v2", True),
    (OLD, None, NEW, "v1", False),
    (OLD, "v1", NEW, "v2", False),
    ("", "v1", OLD, None, False),
    ("", "v1", OLD, "v2", False),
]


@pytest.mark.parametrize(
    ("delete_digest", "delete_tag", "copy_digest", "copy_tag", "waits"), FENCES
)
def test_waits_for_copy(
    delete_digest: str, delete_tag: str | None, copy_digest: str, copy_tag: str | None, waits: bool
) -> None:
    """A delete waits for a copy in flight of its manifest or of its tag (whatever digest the
    copy puts under it), and for no other copy."""
    found = waits_for_copy(
        delete_digest=delete_digest, delete_tag=delete_tag,
        copy_digest=copy_digest, copy_tag=copy_tag,
    )  # fmt: skip
    assert found is waits
