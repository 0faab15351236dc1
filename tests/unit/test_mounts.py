"""domain.transfers.mounts: what a refused cross-repository mount makes of the blob's transfer."""

from __future__ import annotations

import pytest

from replicator.domain.transfers.mounts import MountRefused, after_refused_mount


class TestAfterRefusedMount:
    @pytest.mark.parametrize(
        ("auth", "temporary", "guessed", "expected"),
        [
            (False, False, True, MountRefused.UPLOAD_STOP_GUESSING),
            (False, False, False, MountRefused.UPLOAD_FORGET_HOLDER),
            (True, False, True, MountRefused.RAISE),
            (True, False, False, MountRefused.RAISE),
            (False, True, True, MountRefused.RAISE),
            (False, True, False, MountRefused.RAISE),
        ],
        ids=[
            "pulp-404-on-a-guess", "404-from-a-known-holder", "credentials-on-a-guess",
            "credentials-known-holder", "5xx-on-a-guess", "429-known-holder",
        ],
    )  # fmt: skip
    def test_refusal_table(
        self, auth: bool, temporary: bool, guessed: bool, expected: MountRefused
    ) -> None:
        """A refusal neither about credentials nor temporary becomes a plain upload (and stops
        the guessing, or forgets the holder); credentials and temporary errors stand."""
        assert after_refused_mount(auth=auth, temporary=temporary, guessed=guessed) is expected
