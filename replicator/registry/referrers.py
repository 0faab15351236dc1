"""Referrers (signatures, SBOMs): the OCI 1.1 referrers API, else the tag schema."""

from __future__ import annotations

from replicator.domain.images.manifests import MAX_MANIFEST_BYTES, Descriptor, parse_manifest
from replicator.domain.transfers.plan import referrer_tag_names, referrer_tags
from replicator.errors import ManifestError, NotFoundError
from replicator.logs import get_logger
from replicator.registry import manifests, tags
from replicator.registry.client import RegistryClient, pull_scope

log = get_logger(__name__)

# A repository listing at most this many tags is read in one request for the tag schema's names
# (as few as the names themselves, and cheap to read); a larger one is asked for each name by
# HEAD. Every image copied listed its whole repository: a backfill of a million tags read a
# thousand pages a job, 10^9 pages in all.
SCHEMA_LISTING_TAGS = 100


async def list_referrers(
    client: RegistryClient, repository: str, digest: str
) -> list[Descriptor] | None:
    """Descriptors of manifests whose subject is `digest`; None when the API is not supported.

    A registry without the API (distribution 2.8, older Harbor, ECR before 2024) answers 404 for
    the route; one that has it answers 200 with an index, empty when nothing refers to `digest`.
    The answer is remembered per registry so unsupported registries cost one request per run.
    """
    if client.referrers_api is False:
        return None
    try:
        resp = await client.request(
            "GET",
            f"/v2/{repository}/referrers/{digest}",
            scope=pull_scope(repository),
            headers={"Accept": "application/vnd.oci.image.index.v1+json"},
            # The answer is an index: capped as every manifest is.
            max_bytes=MAX_MANIFEST_BYTES,
        )
    except NotFoundError:
        client.referrers_api = False
        return None
    client.referrers_api = True
    try:
        index = parse_manifest(resp.content, resp.headers.get("content-type"))
    except ManifestError as exc:
        # An invalid descriptor (a digest that is no digest, say) makes the whole answer
        # untrusted: none of its referrers is copied, and the operator is told.
        log.warning("referrers_invalid", host=client.host, repository=repository,
                    subject=digest, error=str(exc)[:200])  # fmt: skip
        return []
    return list(index.children)


async def schema_tags(client: RegistryClient, repository: str, digest: str) -> tuple[str, ...]:
    """The tags of the OCI fallback tag schema and cosign's that refer to `digest`: looked up
    in a short tag list, asked for by HEAD in a long one (a cost flat in the repository's tags)."""
    listed, more = await tags.first_tags(client, repository, SCHEMA_LISTING_TAGS)
    if not more:
        return referrer_tags(listed, digest)
    names = referrer_tag_names(digest)
    return tuple([name for name in names if await manifests.head(client, repository, name)])
