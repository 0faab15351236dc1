"""Fuzz targets of the bus-payload, manifest and reference parsers, for hypothesis and atheris.

A target takes bytes and returns normally when the parser returned a value or raised its typed
error; any other exception escapes, and that is the bug the fuzzer reports. The `intake` target
runs the daemon's whole intake path (parse, route, journal) on a real SQLite journal: it must
return, and leave the message recorded, whatever the bytes. Coverage-guided
runs use atheris (`pip install '.[fuzz]'`), seeded with the corpus in tests/data/fuzz/:

    .venv/bin/python -m tests.support.fuzz_targets events tests/data/fuzz/events -max_total_time=60
    .venv/bin/python -m tests.support.fuzz_targets manifests tests/data/fuzz/manifests -runs=100000
    .venv/bin/python -m tests.support.fuzz_targets intake tests/data/fuzz/events -runs=20000

(give atheris a scratch copy of the folder if the inputs it finds should not join the corpus).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import json
import shutil
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from replicator.config.loading import load_config
from replicator.daemon.service import Daemon
from replicator.domain.events.payloads import MAX_PAYLOAD_BYTES, parse_payload
from replicator.domain.images.manifests import parse_manifest
from replicator.domain.images.refs import parse_reference
from replicator.errors import EventError, InvalidReferenceError, ManifestError
from replicator.journal import EventRow
from replicator.journal.claimers import open_journal

T = TypeVar("T")
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


# One message must be handled within this: intake is a parse and a few journal transactions.
INTAKE_SECONDS = 10.0
# The registries of the intake harness: src1 replicates every repository to dst1.
INTAKE_SOURCE, INTAKE_DESTINATION = "src1", "dst1"
INTAKE_ACCOUNT = "111122223333"


class IntakeHarness:
    """A daemon's intake (parse, route, journal) on a real SQLite journal in `folder`, no bus."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.database = folder / "journal.db"
        (folder / "src1.json").write_text(
            json.dumps(
                {
                    "rules": [
                        {"destinations": [{"region": "us-west-2", "registryId": INTAKE_ACCOUNT}]}
                    ]
                }
            )
        )
        config = folder / "replicator.toml"
        config.write_text(
            "version = 1\n"
            f'[journal]\nurl = "sqlite:///{self.database}"\n'
            f'[registries.{INTAKE_SOURCE}]\naccount = "{INTAKE_ACCOUNT}"\nregion = "us-east-1"\n'
            'url = "http://127.0.0.1:9"\nreplication = "src1.json"\n'
            f'[registries.{INTAKE_DESTINATION}]\naccount = "{INTAKE_ACCOUNT}"\n'
            'region = "us-west-2"\nurl = "http://127.0.0.1:10"\n'
        )
        self.daemon = Daemon(load_config(str(config)))
        self._loop = asyncio.new_event_loop()
        self.journal = self._loop.run_until_complete(open_journal(self.daemon.config.journal.url))
        self.daemon.journal = self.journal

    def run(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run a coroutine of the harness's journal to its end."""
        return self._loop.run_until_complete(work())

    def newest_event_id(self) -> int:
        """The id of the newest recorded event (0 when none)."""
        newest = self.run(lambda: self.journal.events(limit=1))
        return newest[0].id if newest else 0

    def handle(
        self,
        payload: bytes,
        source: str | None = INTAKE_SOURCE,
        *,
        timeout: float = INTAKE_SECONDS,
    ) -> list[EventRow]:
        """Hand one message to the daemon as the bus would (topic registry/<source>/events);
        the events it recorded, oldest first. Raises when intake raises, hangs, or records
        nothing (the message would then be lost or redelivered for ever)."""
        before = self.newest_event_id()
        topic = f"registry/{source}/events"

        async def intake() -> None:
            async with asyncio.timeout(timeout):
                await self.daemon.handle_message(topic, payload, source)

        self.run(intake)
        recorded = [
            row for row in self.run(lambda: self.journal.events(limit=1_000)) if row.id > before
        ]
        assert recorded, f"message of {len(payload)} bytes left no record in the journal"
        return recorded[::-1]

    def close(self) -> None:
        """Close the journal and the loop."""
        self.run(self.journal.close)
        self._loop.close()


# What the flood (one envelope of tiny pull events, as large as a message may be) may
# cost the journal at most.
FLOOD_JOURNAL_BYTES = 2_000_000


def pull_flood(limit: int = MAX_PAYLOAD_BYTES) -> tuple[bytes, int]:
    """A distribution envelope of as many tiny pull events as fit in `limit` bytes (about
    33,000 in 1 MiB), and their number."""
    head, tail = b'{"events":[', b"]}"
    events: list[bytes] = []
    size = len(head) + len(tail)
    while True:
        event = b'{"id":"p%d","action":"pull"}' % len(events)
        if size + len(event) + 1 > limit:
            return head + b",".join(events) + tail, len(events)
        events.append(event)
        size += len(event) + 1


def push_flood(limit: int = MAX_PAYLOAD_BYTES) -> tuple[bytes, int]:
    """A distribution envelope of as many pushes of distinct tagged images as fit in `limit`
    bytes (about 4,300 in 1 MiB), and their number: each is work (a job per destination)."""
    events: list[str] = []
    size = len('{"events":[]}')
    while True:
        n = len(events)
        target = {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "size": 1,
            "repository": f"team/app{n}",
            "digest": f"sha256:{n:064x}",
            "tag": "v1",
        }
        event = json.dumps({"id": f"e{n}", "action": "push", "target": target})
        if size + len(event) + 1 > limit:
            return ('{"events":[' + ",".join(events) + "]}").encode(), n
        events.append(event)
        size += len(event) + 1


def journal_bytes(database: Path) -> int:
    """The bytes of a SQLite journal on disk: the file, its WAL and shared memory."""
    files = [database, *(database.with_name(database.name + end) for end in ("-wal", "-shm"))]
    return sum(path.stat().st_size for path in files if path.exists())


@functools.cache
def _shared_intake() -> IntakeHarness:
    folder = Path(tempfile.mkdtemp(prefix="replicator-intake-fuzz-"))
    # Left open to the end of the process (the journal's worker thread is gone by the time
    # atexit runs); the folder goes.
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return IntakeHarness(folder)


def intake_target(data: bytes) -> None:
    """The daemon's intake on `data` as it would arrive on registry/src1/events: it returns
    and the message is recorded (accepted, ignored or rejected), whatever it holds."""
    _shared_intake().handle(data)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "events": event_target,
    "manifests": manifest_target,
    "references": reference_target,
    "intake": intake_target,
}
# The intake target is seeded with the bus payloads of the events target.
_CORPUS_OF = {"intake": "events"}


def corpus(name: str) -> list[Path]:
    """The corpus files of target `name`, sorted."""
    folder = CORPUS / _CORPUS_OF.get(name, name)
    return sorted(path for path in folder.iterdir() if path.is_file())


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
