"""`replicator copy SRC DST [--all-tags] [-r]`: one-shot copies, no daemon, no journal."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict

from replicator.cli import repository_list
from replicator.cli.copy_options import (
    CREDENTIALS_EPILOG,
    SIDES,
    add_registry_options,
    resolve,
    tls_of,
)
from replicator.cli.documents import document, print_json
from replicator.cli.parsing import MAX_BANDWIDTH_HELP, byte_rate
from replicator.cli.progress import Progress, drawn
from replicator.domain.images.refs import (
    Reference,
    is_loopback_host,
    parse_host_path,
    parse_reference,
    without_transport,
)
from replicator.engine.copier import Copier, CopyFailure, CopyStats
from replicator.engine.endpoint import Endpoint
from replicator.engine.gather import for_each_repository
from replicator.errors import InvalidReferenceError, ReplicatorError, UsageError
from replicator.registry import tags
from replicator.registry.blobs import DEFAULT_CONCURRENCY
from replicator.registry.ping import insecure_scheme
from replicator.registry.pool import ClientPool
from replicator.registry.settings import DEFAULT_MAX_IN_FLIGHT, RegistrySettings

_Outcome = tuple[CopyStats, list[CopyFailure]]
_ClientFor = Callable[[str, str], Endpoint]

# Repositories copied at once by -r; blob transfers are bounded separately by --concurrency and
# requests per registry by --per-registry. An image in flight waits on round trips most of its
# time (HEADs, then uploads, then manifest PUTs: ~6 at 50 ms each 25 ms away), so more images
# than transfers are needed to keep the transfers busy; an image in flight holds only manifests.
REPOSITORIES_IN_FLIGHT = 64


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `copy` subcommand."""
    parser = subparsers.add_parser(
        "copy",
        help="copy an image, a repository or (-r) every repository under a prefix",
        description="Copy images between registries, digest-preserving. SRC and DST are "
        "host[:port]/repo[:tag|@digest]; with -r they are prefixes (host[:port][/path]). "
        "skopeo's docker://host/repo spelling is accepted too.",
        epilog=CREDENTIALS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("src", metavar="SRC")
    parser.add_argument("dst", metavar="DST")
    parser.add_argument("--all-tags", "-a", action="store_true", help="copy every tag of SRC")
    parser.add_argument(
        "-r", "--recursive", action="store_true", help="SRC and DST are repository prefixes"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument(
        "--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="blob transfers in flight"
    )
    parser.add_argument(
        "--per-registry",
        type=int,
        default=DEFAULT_MAX_IN_FLIGHT,
        help="blob transfers in flight per registry (small requests: 4x as many)",
    )
    parser.add_argument(
        "--max-bandwidth", type=byte_rate, default=None, metavar="RATE", help=MAX_BANDWIDTH_HELP
    )
    add_registry_options(parser)
    parser.add_argument(
        "--allow-nondistributable-artifacts",
        action="store_true",
        help="copy non-distributable (foreign) layers too; by default the manifest is copied "
        "and they stay where their urls point, as crane does",
    )
    repository_list.add_arguments(parser, instead_of="the catalog (with -r)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Handle `replicator copy`."""
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> int:
    if args.concurrency < 1 or args.per_registry < 1:
        raise UsageError("--concurrency and --per-registry must be at least 1")
    try:
        # skopeo's spelling (docker://host/repo) is a registry reference like the bare one.
        args.src, args.dst = without_transport(args.src), without_transport(args.dst)
    except InvalidReferenceError as exc:
        raise UsageError(str(exc)) from exc
    credentials = resolve(args)
    tls_by_side = {side: tls_of(args, side) for side in SIDES}
    started = time.monotonic()
    schemes = await _insecure_schemes(args)
    async with ClientPool.sized_for(args.concurrency) as pool:

        def client_for(host: str, side: str) -> Endpoint:
            tls = tls_by_side[side]
            ca_file = tls.ca_file
            verify: bool | str = ca_file or getattr(args, f"{side}_tls_verify")
            settings = RegistrySettings(
                host=host,
                # A CA bundle only means something over TLS: it asks for HTTPS even on
                # loopback, which Docker's rule would otherwise reach over plain HTTP.
                scheme="https" if ca_file else schemes.get((side, host)),
                credentials=credentials[side].provider(host),
                token_realms=tuple(getattr(args, f"{side}_token_realms")),
                verify=verify,
                cert=tls.cert,
                max_in_flight=args.per_registry,
                max_bandwidth=args.max_bandwidth if side == "dst" else None,
            )
            foreign = side == "dst" and args.allow_nondistributable_artifacts
            return Endpoint(pool.client(settings), "", foreign_layers=foreign)

        progress = Progress()
        copier = Copier(concurrency=args.concurrency, on_blob=progress.add_bytes, on_image=progress)
        if not args.recursive and repository_list.chosen(args) is not None:
            raise UsageError("--repository and --repositories-from name the repositories of -r")
        single = not args.recursive and not args.all_tags
        async with drawn(progress.text, sys.stderr):
            if args.recursive:
                stats, failures = await _copy_prefix(copier, args, client_for)
            else:
                if single:
                    progress.plan(1)
                stats, failures = await _copy_one(copier, args, client_for)
                if single:
                    progress.image_done(failed=bool(failures))
    _report(stats, failures, time.monotonic() - started, as_json=args.json)
    return 1 if failures else 0


async def _insecure_schemes(args: argparse.Namespace) -> dict[tuple[str, str], str]:
    """The scheme of each side given --{src,dest}-tls-verify=false (and no CA file) whose
    host is not loopback: HTTPS if it answers TLS, else plain HTTP, as skopeo does."""
    try:
        if args.recursive:
            hosts = {"src": parse_host_path(args.src)[0], "dst": parse_host_path(args.dst)[0]}
        else:
            src, dst = _references(args)
            hosts = {"src": src.host, "dst": dst.host}
    except InvalidReferenceError:
        return {}  # the copy itself reports the bad reference
    found: dict[tuple[str, str], str] = {}
    for side, host in hosts.items():
        insecure = getattr(args, f"{side}_tls_verify") is False
        if insecure and not getattr(args, f"{side}_ca_file") and not is_loopback_host(host):
            found[(side, host)] = await insecure_scheme(host)
    return found


def _references(args: argparse.Namespace) -> tuple[Reference, Reference]:
    try:
        return parse_reference(args.src), parse_reference(args.dst)
    except InvalidReferenceError as exc:
        raise UsageError(str(exc)) from exc


async def _copy_one(copier: Copier, args: argparse.Namespace, client_for: _ClientFor) -> _Outcome:
    src, dst = _references(args)
    if dst.digest:
        raise UsageError("DST cannot name a digest: digests are preserved, give a tag or none")
    src_end = _with_repo(client_for(src.host, "src"), src.repository)
    dst_end = _with_repo(client_for(dst.host, "dst"), dst.repository)
    if args.all_tags:
        if src.tag or src.digest or dst.tag:
            raise UsageError("--all-tags copies a whole repository: give SRC and DST without tag")
        return await copier.copy_repository(src_end, dst_end)
    reference = _source_reference(src)
    tag = _destination_tag(src, dst)
    try:
        stats = (await copier.copy_image(src_end, reference, dst_end, tag=tag)).stats
    except ReplicatorError as exc:
        return CopyStats(), [CopyFailure(str(src), exc.code, str(exc))]
    return stats, []


def _destination_tag(src: Reference, dst: Reference) -> str | None:
    """DST's tag, else SRC's; a copy by digest alone stays untagged; neither means `latest`."""
    if dst.tag or src.tag:
        return dst.tag or src.tag
    return None if src.digest else "latest"


def _source_reference(src: Reference) -> str:
    # Docker's rule: no tag and no digest means `latest`.
    return src.digest or src.tag or "latest"


async def _copy_prefix(
    copier: Copier, args: argparse.Namespace, client_for: _ClientFor
) -> _Outcome:
    try:
        src_host, src_prefix = parse_host_path(args.src)
        dst_host, dst_prefix = parse_host_path(args.dst)
    except InvalidReferenceError as exc:
        raise UsageError(str(exc)) from exc
    source = client_for(src_host, "src")
    target = client_for(dst_host, "dst")
    named = repository_list.chosen(args)
    if named is not None:
        outside = [name for name in named if not tags.under_prefix(name, src_prefix)]
        if outside:
            raise UsageError(f"--repository {outside[0]} is not under {args.src}")
    total, failures = CopyStats(), []
    seen = 0

    async def one(name: str) -> None:
        nonlocal seen
        seen += 1
        suffix = name[len(src_prefix) :].lstrip("/") if src_prefix else name
        dest_name = "/".join(part for part in (dst_prefix, suffix) if part)
        try:
            stats, failed = await copier.copy_repository(
                _with_repo(source, name), _with_repo(target, dest_name)
            )
        except ReplicatorError as exc:
            failures.append(CopyFailure(f"{src_host}/{name}", exc.code, str(exc)))
            return
        total.add(stats)
        failures.extend(failed)

    # The catalog is read as it is walked: a registry of any size costs bounded memory.
    names = _each(named) if named is not None else tags.catalog(source.client, src_prefix)
    await for_each_repository(names, one, in_flight=REPOSITORIES_IN_FLIGHT)
    if not seen:
        raise UsageError(
            f"no repository under {args.src} (in the registry's catalog, or among the names "
            "given): check the prefix, and name repositories with --repository NAME or "
            "--repositories-from FILE if the registry lists none"
        )
    return total, failures


async def _each(names: Sequence[str]) -> AsyncIterator[str]:
    for name in names:
        yield name


def _with_repo(endpoint: Endpoint, repository: str) -> Endpoint:
    return dataclasses.replace(endpoint, repository=repository)


def _report(
    stats: CopyStats, failures: list[CopyFailure], seconds: float, *, as_json: bool
) -> None:
    if as_json:
        body = asdict(stats) | {
            "seconds": round(seconds, 3),
            "failures": [asdict(f) for f in failures],
        }
        print_json(document("copy", body))
    else:
        rate = stats.bytes_copied / seconds / 1e6 if seconds > 0 else 0.0
        print(
            f"{stats.images} images, {stats.manifests} manifests written; blobs: "
            f"{stats.blobs_copied} copied, {stats.blobs_mounted} mounted, {stats.blobs_skipped} "
            f"already there; {stats.bytes_copied / 1e6:.1f} MB in {seconds:.1f} s ({rate:.1f} MB/s)"
        )
    for failure in failures:
        print(f"failed: {failure.image}: {failure.code}: {failure.reason}", file=sys.stderr)
