"""Referrers (signatures, SBOMs): the OCI 1.1 referrers API, else the tag schema."""

from __future__ import annotations

from replicator.domain.images.manifests import MAX_MANIFEST_BYTES, Descriptor, parse_manifest
from replicator.errors import ManifestError, NotFoundError
from replicator.logs import get_logger
from replicator.registry.client import RegistryClient, pull_scope

log = get_logger(__name__)


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
