"""A credential source asked while a job runs — a Docker credential helper (a real executable
here, held as one waiting on a locked keychain) — is a wait like a token fetch: the job's
destination slot is given back meanwhile and taken again after. Two jobs asking at once on a
destination of one slot both end: no task takes its slot again while it holds the provider's
lock, or the refresh lock, that the job holding the slot waits for."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from replicator.engine.bulkheads import DestinationSlots
from replicator.registry.auth import Authenticator
from replicator.registry.credentials import Credentials
from replicator.registry.dockerconfig import DockerConfigCredentials
from replicator.registry.wait_scope import waits_release
from tests.support.credential_helpers import CredentialHelper

HOST = "registry.example.com:5000"
SCOPE = "repository:app:pull"
# A free slot is granted, and a helper started, within milliseconds; seconds cover a loaded
# machine.
WITHIN_SECONDS = 10.0
# Both jobs end within this once the helper answers (a helper run each: a fraction of a second);
# a deadlock never does.
BOTH_END_WITHIN_SECONDS = 30.0
POLL_SECONDS = 0.01


@pytest.fixture
def helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CredentialHelper:
    """docker-credential-vault first on PATH, answering robot's secret for HOST."""
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", f"{folder}:/usr/bin:/bin")
    vault = CredentialHelper(folder, "vault")
    vault.set({HOST: ("robot", "secret")})
    return vault


def _authenticator(http: httpx.AsyncClient, folder: Path) -> Authenticator:
    """HOST's Authenticator, its credentials from config.json's credHelpers entry (vault)."""
    config = folder / "config.json"
    config.write_text(json.dumps({"credHelpers": {HOST: "vault"}}))
    provider = DockerConfigCredentials([config], HOST)
    return Authenticator(http, provider, registry=("https", HOST.split(":", maxsplit=1)[0], 5000))


def _basic_challenge(sent: str | None = None) -> httpx.Response:
    """The registry's 401 with a Basic challenge to a request that carried `sent`."""
    request = httpx.Request(
        "GET", f"https://{HOST}/v2/app/manifests/v1",
        headers={"Authorization": sent} if sent else None,
    )  # fmt: skip
    return httpx.Response(
        401, headers={"WWW-Authenticate": 'Basic realm="registry"'}, request=request
    )


async def _until(done: Callable[[], object]) -> None:
    async with asyncio.timeout(WITHIN_SECONDS):
        while not done():
            await asyncio.sleep(POLL_SECONDS)


async def test_a_helper_run_gives_the_job_slot_back(
    tmp_path: Path, helper: CredentialHelper
) -> None:
    """While the helper runs for a job's Basic challenge, another job to the same destination
    (one slot) is granted the slot; the first takes it again after, with the credentials."""
    slots = DestinationSlots(capacity=lambda: 1)
    first, second = slots.ticket("dst", "a"), slots.ticket("dst", "b")
    helper.hold()
    async with httpx.AsyncClient() as http:
        auth = _authenticator(http, tmp_path)

        async def job() -> str:
            async with first:
                with waits_release(first.waiting):
                    answer = await auth.answer(_basic_challenge(), SCOPE)
                assert slots.held("dst") == 1
                return answer

        task = asyncio.create_task(job())
        try:
            await _until(lambda: helper.calls)
            async with asyncio.timeout(WITHIN_SECONDS), second:
                assert not task.done()  # granted while the helper still runs
        finally:
            helper.release()
        assert await task == Credentials("robot", "secret").basic_header()


@pytest.mark.parametrize("refused", [False, True], ids=["first-resolve", "refresh"])
async def test_two_jobs_asking_at_once_on_one_slot_both_end(
    tmp_path: Path, helper: CredentialHelper, refused: bool
) -> None:
    """Two jobs on a destination of one slot meet a Basic challenge at once while the helper is
    held — the first time the credentials are needed, or after the registry refused them (the
    secret rotated) — and both end once it answers, with the helper's credentials."""
    slots = DestinationSlots(capacity=lambda: 1)
    async with httpx.AsyncClient() as http:
        auth = _authenticator(http, tmp_path)
        sent = await auth.answer(_basic_challenge(), SCOPE) if refused else None
        helper.set({HOST: ("robot", "rotated")})
        helper.hold()

        async def job(name: str) -> str:
            ticket = slots.ticket("dst", name)
            async with ticket:
                with waits_release(ticket.waiting):
                    return await auth.answer(_basic_challenge(sent), SCOPE)

        tasks = [asyncio.create_task(job(name)) for name in ("a", "b")]
        try:
            await _until(lambda: len(helper.calls) > refused)
        finally:
            helper.release()
        async with asyncio.timeout(BOTH_END_WITHIN_SECONDS):
            answers = await asyncio.gather(*tasks)
    rotated = Credentials("robot", "rotated").basic_header()
    assert answers == [rotated, rotated]
