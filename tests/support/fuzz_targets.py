"""Fuzz targets of the bus-payload, manifest and reference parsers, for hypothesis and atheris.

A target takes bytes and returns normally when the parser returned a value or raised its typed
error; any other exception escapes, and that is the bug the fuzzer reports. Coverage-guided
runs use atheris (`pip install '.[fuzz]'`), seeded with the corpus in tests/data/fuzz/:

    .venv/bin/python -m tests.support.fuzz_targets events tests/data/fuzz/events -max_total_time=60
    .venv/bin/python -m tests.support.fuzz_targets manifests tests/data/fuzz/manifests -runs=100000

(give atheris a scratch copy of the folder if the inputs it finds should not join the corpus).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from pathlib import Path

from replicator.domain.events import parse_payload
from replicator.domain.manifests import parse_manifest
from replicator.domain.refs import parse_reference
from replicator.errors import EventError, InvalidReferenceError, ManifestError

CORPUS = Path(__file__).resolve().parents[1] / "data" / "fuzz"
# Content types a registry may send with a manifest: the parser falls back on them.
_CONTENT_TYPES = (
    None,
    "application/json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)


def _locate(account: str, region: str) -> str | None:
    return "src1" if (account, region) == ("111122223333", "us-east-1") else None


def event_target(data: bytes) -> None:
    """parse_payload on `data` as it would arrive on registry/src1/events."""
    with contextlib.suppress(EventError):
        parse_payload(data, topic_source="src1", locate=_locate, sources={"src1"})


def manifest_target(data: bytes) -> None:
    """parse_manifest on `data` under each Content-Type a registry might send."""
    for content_type in _CONTENT_TYPES:
        with contextlib.suppress(ManifestError):
            parse_manifest(data, content_type)


def reference_target(data: bytes) -> None:
    """parse_reference on `data` decoded as text, as `replicator copy` parses SRC and DST."""
    text = data.decode("utf-8", errors="replace")
    for require_host in (True, False):
        with contextlib.suppress(InvalidReferenceError):
            parse_reference(text, require_host=require_host)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "events": event_target,
    "manifests": manifest_target,
    "references": reference_target,
}


def corpus(name: str) -> list[Path]:
    """The corpus files of target `name`, sorted."""
    return sorted(path for path in (CORPUS / name).iterdir() if path.is_file())


def main(argv: list[str]) -> None:
    """`python -m tests.support.fuzz_targets TARGET [libFuzzer arguments...]` under atheris."""
    # The `fuzz` extra: untyped, and absent where only the tests run (hence lazy).
    import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]

    if len(argv) < 2 or argv[1] not in TARGETS:
        raise SystemExit(f"usage: {argv[0]} {{{','.join(TARGETS)}}} [libFuzzer args]")
    target = TARGETS[argv[1]]
    atheris.instrument_all()
    atheris.Setup([argv[0], *argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
