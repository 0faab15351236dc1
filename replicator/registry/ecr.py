"""Amazon ECR's own API, for what the registry API lacks there: tokens, repositories, listings.

ECR takes Basic `AWS:<password>` where the password comes from `GetAuthorizationToken` (12-hour
tokens); it has no `/v2/_catalog`, so a source is listed with `DescribeRepositories` and
`ListImages`; and it does not create a repository on push, so a destination's repository is
created with `CreateRepository` (as ECR replication does). botocore (the `ecr` extra: `pip
install replicator[ecr]`) is imported only when an ECR registry is used; it finds credentials
in the standard chain (environment, profile, instance role, web identity) and honours
`AWS_ENDPOINT_URL_ECR`; `ecr_endpoint` in the config overrides it (VPC endpoints, tests).

botocore is synchronous: each call runs in a worker thread. Its exceptions become ours here.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from replicator.errors import AuthError, ConfigError, RegistryError, TransportError
from replicator.logs import get_logger
from replicator.registry.credentials import Credentials

log = get_logger(__name__)

# ECR tokens live 12 hours. Renew half an hour before expiry: a long upload started just before
# still ends inside the old token's life, and a failing renewal has time to be retried.
TOKEN_REFRESH_MARGIN = 30 * 60.0
# A token whose expiry is near or already past when it arrives (a skewed clock; moto answers
# an expiry of 2015) is still used for this long rather than fetched again for every request.
MIN_TOKEN_REUSE = 60.0
# A repository seen to exist is taken to exist for this long without asking again (one
# DescribeRepositories per repository every few minutes, not per job); one deleted meanwhile
# fails the push with NAME_UNKNOWN, and the retry after this time re-creates it.
KNOWN_REPOSITORY_SECONDS = 300.0
# botocore's own bounds on one ECR API call (its calls run in a thread, outside asyncio's
# timeouts): a dead endpoint fails in seconds, and throttling is retried a few times with
# botocore's standard backoff before our own retries take over.
ECR_CONNECT_TIMEOUT = 10.0
ECR_READ_TIMEOUT = 30.0
ECR_MAX_ATTEMPTS = 3
# Repositories per DescribeRepositories page and images per ListImages page (ECR's maxima).
DESCRIBE_PAGE = 1000
LIST_IMAGES_PAGE = 1000
# An ECR registry's host: `<account>.dkr.ecr[-fips].<region>.<suffix>` with the DNS suffix of
# each AWS partition (botocore's endpoints.json: amazonaws.com, amazonaws.com.cn, the isolated
# c2s.ic.gov, sc2s.sgov.gov, cloud.adc-e.uk, csp.hci.ic.gov, the European sovereign cloud's
# amazonaws.eu), and the dual-stack (IPv6) `<account>.dkr-ecr[-fips].<region>.on.aws` (in
# China on.amazonwebservices.com.cn) of ECR's user guide, "Making requests to Amazon ECR
# registries". The same hosts amazon-ecr-credential-helper accepts.
_ECR_HOST = re.compile(
    r"^(?P<account>[0-9]{12})\.dkr[.-]ecr(?:-fips)?\.(?P<region>[a-z]{2,4}(?:-[a-z]+)+-[0-9]+)"
    r"\.(?:amazonaws\.(?:com|com\.cn|eu)|on\.aws|on\.amazonwebservices\.com\.cn|c2s\.ic\.gov"
    r"|sc2s\.sgov\.gov|cloud\.adc-e\.uk|csp\.hci\.ic\.gov)(?::443)?$"
)
# What makes a host look like an ECR registry's to a reader: a `dkr.ecr` or `dkr-ecr` label.
_ECR_LOOKALIKE = re.compile(r"(?:^|\.)dkr[.-]ecr(?:-fips)?\.")
_MISSING_EXTRA = "auth = \"ecr\" needs botocore: pip install 'replicator[ecr]'"


def ecr_location(host: str) -> tuple[str, str] | None:
    """(account, region) of an ECR registry host name, or None for any other host."""
    match = _ECR_HOST.match(host.lower())
    return (match["account"], match["region"]) if match else None


def looks_like_ecr(host: str) -> bool:
    """Whether `host` has an ECR registry's `dkr.ecr` / `dkr-ecr` label (recognised or not)."""
    return _ECR_LOOKALIKE.search(host.lower()) is not None


# The hosts ecr_location knows, as a config error lists them.
ECR_HOST_FORMS = (
    "<account>.dkr.ecr[-fips].<region>.amazonaws.com (.com.cn, .eu, and the isolated regions' "
    "c2s.ic.gov, sc2s.sgov.gov, cloud.adc-e.uk, csp.hci.ic.gov) or the dual-stack "
    "<account>.dkr-ecr.<region>.on.aws"
)


def renewal_time(now: float, expires_at: float) -> float:
    """When to fetch a new token: TOKEN_REFRESH_MARGIN before it expires, and never sooner
    than MIN_TOKEN_REUSE from now (epoch seconds, both)."""
    return now + max(MIN_TOKEN_REUSE, expires_at - now - TOKEN_REFRESH_MARGIN)


def _botocore() -> Any:
    try:
        import botocore.session
    except ImportError as exc:
        raise ConfigError(_MISSING_EXTRA) from exc
    return botocore.session


def _error(action: str, exc: Exception) -> Exception:
    """Our typed error for a botocore exception of `action`; others are returned unchanged."""
    import botocore.exceptions as boto

    if isinstance(exc, boto.NoCredentialsError | boto.PartialCredentialsError):
        return AuthError(
            f"ECR {action}: no AWS credentials found (environment, profile, instance role, "
            "web identity)",
            temporary=False,
        )
    if isinstance(exc, boto.ClientError):
        code = str(exc.response.get("Error", {}).get("Code", "unknown"))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        message = f"ECR {action}: {code}"
        if code in ("AccessDeniedException", "UnrecognizedClientException", "ExpiredToken"):
            return AuthError(message, status=status or 403, temporary=False)
        temporary = status >= 500 or status == 429 or code == "ThrottlingException"
        return RegistryError(message, status=status or None, temporary=temporary)
    if isinstance(exc, boto.BotoCoreError):  # endpoint unreachable, timeouts, bad responses
        return TransportError(f"ECR {action}: {type(exc).__name__}: {exc}")
    return exc


@dataclass(eq=False)
class EcrApi:
    """The control-plane calls of one ECR registry (account and region)."""

    registry_id: str
    region: str
    endpoint_url: str | None = None
    _client: Any = field(default=None, repr=False)
    _known: dict[str, float] = field(default_factory=dict, repr=False)

    def _ecr(self) -> Any:
        if self._client is None:
            session = _botocore().get_session()
            from botocore.config import Config

            bounds = Config(
                connect_timeout=ECR_CONNECT_TIMEOUT,
                read_timeout=ECR_READ_TIMEOUT,
                retries={"max_attempts": ECR_MAX_ATTEMPTS, "mode": "standard"},
            )
            self._client = session.create_client(
                "ecr", region_name=self.region, endpoint_url=self.endpoint_url, config=bounds
            )
        return self._client

    async def _call(self, action: str, **params: Any) -> dict[str, Any]:
        def call() -> dict[str, Any]:
            method = getattr(self._ecr(), action)
            try:
                answer: dict[str, Any] = method(**params)
            except Exception as exc:
                raise _error(action, exc) from exc
            return answer

        return await asyncio.to_thread(call)

    async def authorization(self) -> tuple[Credentials, float]:
        """Credentials from GetAuthorizationToken and when they expire (epoch seconds)."""
        answer = await self._call("get_authorization_token", registryIds=[self.registry_id])
        data = answer.get("authorizationData") or []
        try:
            token = base64.b64decode(data[0]["authorizationToken"]).decode()
            expires = float(data[0]["expiresAt"].timestamp())
        except (IndexError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise AuthError("ECR GetAuthorizationToken answered no usable token") from exc
        user, colon, password = token.partition(":")
        if not colon or not password:
            raise AuthError("ECR GetAuthorizationToken answered a token that is not user:password")
        return Credentials(user, password), expires

    async def repository_exists(self, name: str) -> bool:
        """Whether the repository exists (DescribeRepositories of that one name)."""
        seen = self._known.get(name)
        if seen is not None and time.monotonic() - seen < KNOWN_REPOSITORY_SECONDS:
            return True
        try:
            await self._call(
                "describe_repositories", registryId=self.registry_id, repositoryNames=[name]
            )
        except RegistryError as exc:
            if "RepositoryNotFoundException" in str(exc):
                return False
            raise
        self._known[name] = time.monotonic()
        return True

    async def create_repository(self, name: str) -> bool:
        """Create the repository; False when it existed already (another process created it)."""
        try:
            await self._call("create_repository", registryId=self.registry_id, repositoryName=name)
        except RegistryError as exc:
            if "RepositoryAlreadyExistsException" in str(exc):
                self._known[name] = time.monotonic()
                return False
            raise
        self._known[name] = time.monotonic()
        log.info("ecr_repository_created", registry_id=self.registry_id, repository=name)
        return True

    async def repositories(self) -> list[str]:
        """Every repository name, from DescribeRepositories pages."""
        params = {"registryId": self.registry_id, "maxResults": DESCRIBE_PAGE}
        return await self._paged("describe_repositories", params, "repositories", "repositoryName")

    async def tags(self, name: str) -> list[str]:
        """Every tag of a repository, from ListImages pages (empty when it does not exist)."""
        params = {
            "registryId": self.registry_id,
            "repositoryName": name,
            "filter": {"tagStatus": "TAGGED"},
            "maxResults": LIST_IMAGES_PAGE,
        }
        try:
            return await self._paged("list_images", params, "imageIds", "imageTag")
        except RegistryError as exc:
            if "RepositoryNotFoundException" in str(exc):
                return []
            raise

    async def _paged(
        self, operation: str, params: dict[str, Any], entries: str, field: str
    ) -> list[str]:
        """The string `field` of each of the `entries` of every page `operation` answers,
        following `nextToken` to the last page."""
        found: list[str] = []
        token: str | None = None
        while True:
            page = {**params, "nextToken": token} if token else params
            answer = await self._call(operation, **page)
            found.extend(
                str(entry[field])
                for entry in answer.get(entries, [])
                if isinstance(entry, dict) and isinstance(entry.get(field), str)
            )
            token = answer.get("nextToken")
            if not token:
                return found


@dataclass
class EcrCredentials:
    """A CredentialProvider of ECR tokens, renewed TOKEN_REFRESH_MARGIN before they expire.

    Equal when they name the same registry and endpoint, so the provider a config reload builds
    for every job leaves the client with the one holding the cached token."""

    api: EcrApi = field(compare=False)
    registry_id: str
    region: str
    endpoint_url: str | None = None
    clock: Callable[[], float] = field(default=time.time, compare=False, repr=False)
    _cached: tuple[Credentials, float] | None = field(default=None, compare=False, repr=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, compare=False, repr=False)

    @classmethod
    def of(cls, api: EcrApi) -> EcrCredentials:
        """The provider of `api`'s registry."""
        return cls(api, api.registry_id, api.region, api.endpoint_url)

    @property
    def source(self) -> str:
        """Where the credentials come from (never a secret)."""
        return f"ECR GetAuthorizationToken for {self.registry_id} in {self.region}"

    def cached(self) -> bool:
        """A token not yet due for renewal, and no renewal under way."""
        cached = self._cached
        return cached is not None and self.clock() < cached[1] and not self._lock.locked()

    async def get(self, *, refresh: bool = False) -> Credentials | None:
        """The current token's credentials, fetched again when due or when `refresh`."""
        cached = self._cached
        if cached is not None and not refresh and self.clock() < cached[1]:
            return cached[0]
        async with self._lock:
            if self._cached is not None and self._cached is not cached:
                return self._cached[0]  # renewed by a concurrent caller meanwhile
            credentials, expires = await self.api.authorization()
            now = self.clock()
            self._cached = (credentials, renewal_time(now, expires))
            log.info(
                "ecr_token_fetched",
                registry_id=self.registry_id,
                region=self.region,
                expires_in=round(expires - now),
            )
            return credentials
