"""Amazon ECR's API played by `moto_server` (moto in server mode, a real HTTP endpoint that real
botocore calls reach), and a docker-registry playing the ECR registry beside it.

moto's GetAuthorizationToken answers `AWS:<account>-auth-token` for each registry id (with an
expiry in 2015), so a registry with htpasswd user `AWS` and that password accepts exactly the
token the code under test obtained. What moto holds (repositories, image tags) and what the
registry stores are separate: a test that lists an ECR source puts the same images into both.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import botocore.session
import httpx
import pytest

from tests.support.ports import free_port, wait_listening

# moto_server is installed beside this interpreter (the dev dependency moto[server]).
MOTO_SERVER = Path(sys.executable).parent / "moto_server"
STOP_TIMEOUT_SECONDS = 5.0
# Credentials for botocore's standard chain: moto accepts any.
AWS_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}


def ecr_password(account: str) -> str:
    """The password inside the token moto's GetAuthorizationToken gives for `account`."""
    return f"{account}-auth-token"


class MotoServer:
    """One `moto_server` process on a free loopback port."""

    def __init__(self) -> None:
        if not MOTO_SERVER.exists():
            pytest.fail(f"{MOTO_SERVER} is missing: install the dev dependencies (moto[server])")
        self.workdir = Path(tempfile.mkdtemp(prefix="replicator-moto-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.workdir / "moto.log"
        log = self.log_path.open("ab")
        try:
            self._process = subprocess.Popen(
                [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()
        wait_listening(self.port)

    def ecr(self, region: str) -> Any:
        """A botocore ECR client of this server (test set-up and checks)."""
        session = botocore.session.get_session()
        return session.create_client(
            "ecr",
            region_name=region,
            endpoint_url=self.url,
            aws_access_key_id=AWS_ENVIRONMENT["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=AWS_ENVIRONMENT["AWS_SECRET_ACCESS_KEY"],
        )

    def repositories(self, account: str, region: str) -> list[str]:
        """Names of the repositories moto holds for the account in the region."""
        answer = self.ecr(region).describe_repositories(registryId=account)
        return sorted(repo["repositoryName"] for repo in answer["repositories"])

    def reset(self) -> None:
        """Forget every repository and image (moto's reset endpoint)."""
        httpx.post(f"{self.url}/moto-api/reset", timeout=10.0).raise_for_status()

    def stop(self) -> None:
        """Stop the process and delete its folder."""
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)
