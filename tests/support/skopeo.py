"""skopeo as the independent client: pushes OCI layouts to registries and reads what landed."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

SKOPEO_BINARY = "/usr/bin/skopeo"
# A push of the test images takes about a second; the bench corpus image is tens of MiB.
DEFAULT_TIMEOUT_SECONDS = 120.0


class SkopeoError(RuntimeError):
    """skopeo exited non-zero; the message carries its stderr."""


def run_skopeo(args: list[str], *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> bytes:
    """Run skopeo with args; return stdout or raise SkopeoError with stderr."""
    try:
        result = subprocess.run(
            [SKOPEO_BINARY, *args],
            capture_output=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise SkopeoError(f"skopeo {' '.join(args[:2])} timed out after {timeout}s") from exc
    if result.returncode != 0:
        stderr = result.stderr.decode(errors="replace").strip()
        raise SkopeoError(f"skopeo {' '.join(args)} failed ({result.returncode}): {stderr}")
    return result.stdout


def _creds_args(flag: str, creds: tuple[str, str] | None) -> list[str]:
    return [f"--{flag}-creds", f"{creds[0]}:{creds[1]}"] if creds else []


def push_layout(
    layout: Path,
    tag: str,
    destination: str,
    *,
    creds: tuple[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> None:
    """Push `oci:LAYOUT:TAG` to `docker://DESTINATION` (host/repo:tag), digests preserved."""
    run_skopeo(
        [
            "copy",
            "--quiet",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
            *_creds_args("dest", creds),
            f"oci:{layout}:{tag}",
            f"docker://{destination}",
        ],
        timeout=timeout,
    )


def inspect_raw(reference: str, *, creds: tuple[str, str] | None = None) -> bytes:
    """The manifest bytes of `host/repo:tag` or `host/repo@digest`, exactly as served."""
    return run_skopeo(
        [
            "inspect",
            "--raw",
            "--tls-verify=false",
            *(["--creds", f"{creds[0]}:{creds[1]}"] if creds else []),
            f"docker://{reference}",
        ]
    )


def digest_of(reference: str, *, creds: tuple[str, str] | None = None) -> str:
    """`sha256:<hex>` of the manifest bytes the registry serves for reference."""
    return f"sha256:{hashlib.sha256(inspect_raw(reference, creds=creds)).hexdigest()}"


def list_tags(repository: str, *, creds: tuple[str, str] | None = None) -> list[str]:
    """Sorted tags of `host/repo`; empty when the repository does not exist."""
    try:
        out = run_skopeo(
            [
                "list-tags",
                "--tls-verify=false",
                *(["--creds", f"{creds[0]}:{creds[1]}"] if creds else []),
                f"docker://{repository}",
            ]
        )
    except SkopeoError as exc:
        # skopeo 1.9 says "invalid status code from registry 404" for an unknown repository.
        if "404" in str(exc) or "NAME_UNKNOWN" in str(exc):
            return []
        raise
    tags: list[str] = json.loads(out).get("Tags") or []
    return sorted(tags)
