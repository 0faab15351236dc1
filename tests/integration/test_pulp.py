"""Pulp (pulp-container) as the destination: a second registry implementation, opt-in
(tests/support/pulp_server.py: scripts/pulp.sh, then REPLICATOR_TEST_PULP=1).

Pulp answers a cross-repository mount of a blob the `from` repository lacks `404 BLOB_UNKNOWN`
(the spec says SHOULD 202), so a namespace that already holds a repository is where copies into
it used to fail.
"""

from __future__ import annotations

import pytest

from tests.support import skopeo
from tests.support.copy_cli import copy_ok
from tests.support.copy_corpus import CopyCorpus
from tests.support.pulp_server import ADMIN, Pulp

# Pulp's migrations take a minute or more and it serves a copy several times slower than
# docker-registry on a loaded machine.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1200)]
# Repositories copied into the namespace besides the one already there: two images, each
# sharing base layers with it (guessed mounts that Pulp refuses for their own blobs).
REPOSITORIES = ("team/base-b", "team/docker")


def _tags(pulp: Pulp, repository: str) -> list[str]:
    """Sorted tags of `repository` in Pulp, as skopeo reads them."""
    return sorted(skopeo.list_tags(f"{pulp.host}/{repository}", creds=(ADMIN, pulp.password)))


class TestCopyIntoPulp:
    def test_namespace_holding_a_repository_takes_every_image(
        self, pulp: Pulp, copy_corpus: CopyCorpus
    ) -> None:
        """`copy -r` into a Pulp namespace that already holds a repository lands every image
        with the source's tags (the refused sibling mounts become uploads), and a second run
        moves no byte."""
        copy_ok(copy_corpus.ref("team/base-a", "1"), f"{pulp.host}/team/base-a:1",
                "--dest-creds", pulp.creds)  # fmt: skip
        named = [arg for name in REPOSITORIES for arg in ("--repository", name)]
        command = ["-r", copy_corpus.ref("team"), f"{pulp.host}/team", *named,
                   "--dest-creds", pulp.creds]  # fmt: skip
        summary = copy_ok(*command)
        assert summary["failures"] == []
        assert summary["blobs_copied"] > 0
        for repository in REPOSITORIES:
            assert _tags(pulp, repository) == sorted(
                skopeo.list_tags(copy_corpus.ref(repository))
            ), repository
        again = copy_ok(*command)
        assert (again["blobs_copied"], again["bytes_copied"]) == (0, 0)
