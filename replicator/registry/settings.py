"""One registry as the client reaches it: a single immutable record from config to socket.

It is built in one place per origin — `config/sites.settings_for` from `[registries.<name>]`,
`cli/copy.py` from the command line — and handed whole to `ClientPool.client`, which builds the
registry's connection pool and `RegistryClient` from it. Nothing copies its fields on the way: a
new per-registry setting is a field here, a line where the record is built, and its one user.

What a copy does with a registry (foreign layers, the policy) is not here: that belongs to the
destination (`engine/endpoint.Endpoint`, `domain/`), not to the HTTP client.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from replicator.registry.credentials import CredentialProvider
from replicator.registry.ecr import EcrApi
from replicator.registry.retry import RetryPolicy

# Default blob transfers in flight per registry: distribution and most cloud registries throttle
# well above this, and more than ~8 parallel streams gain nothing on one TCP path.
DEFAULT_MAX_IN_FLIGHT = 8
# Connect fast-fail: a registry that accepts no TCP connection in 10 s is down or filtered.
CONNECT_TIMEOUT_SECONDS = 10.0
# Reads may legitimately stall while a registry hashes a large upload before answering its
# final PUT (distribution verifies the digest of the whole blob then).
READ_TIMEOUT_SECONDS = 120.0
# Sending a request body may stall as long while the registry's storage backend is slow.
WRITE_TIMEOUT_SECONDS = 120.0


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long one exchange with the registry may wait, in seconds, for each of its phases."""

    connect: float = CONNECT_TIMEOUT_SECONDS
    read: float = READ_TIMEOUT_SECONDS
    write: float = WRITE_TIMEOUT_SECONDS

    def as_extension(self) -> dict[str, float | None]:
        """httpx's `timeout` request extension; waiting for a pooled connection has no limit
        (the request slots bound how many wait)."""
        return {"connect": self.connect, "read": self.read, "write": self.write, "pool": None}


@dataclass(frozen=True, slots=True)
class RegistrySettings:
    """How to reach one registry: where (host, scheme: None = Docker's loopback rule), who we
    are (credentials, token realms), over what (TLS, proxy), how much at once (request slots,
    bandwidth), how long (timeouts) and how often to try (retry policy)."""

    host: str
    scheme: str | None = None
    credentials: CredentialProvider | None = field(default=None, repr=False)
    # Token realms on other hosts than the registry's that may receive its credentials.
    token_realms: tuple[str, ...] = ()
    verify: bool | str = True  # False, True, or a CA bundle path
    cert: tuple[str, str] | None = None  # client certificate and key for mTLS
    # None: HTTPS_PROXY / HTTP_PROXY / NO_PROXY decide; "none": direct; else this proxy's URL.
    proxy: str | None = None
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    # Blob bytes per second to and from the registry, all jobs together; None: no limit.
    max_bandwidth: int | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # An ECR registry: its own API lists tags and repositories and creates repositories (the
    # distribution API has no way to create one there); its credential provider gives tokens.
    ecr: EcrApi | None = field(default=None, repr=False)
