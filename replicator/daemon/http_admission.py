"""Which connections the HTTP server takes: a cap on all of them and on each client's.

A connection costs a task, h11 state and socket buffers; without a cap, a client opening
thousands (or many clients at once) takes memory and file descriptors from the daemon. Each
client (peer address) gets its share, so one sender cannot crowd out the others.

A server may also keep `reserved` places beyond the cap for authenticated senders (the bridge:
webhooks carrying their source's secret). A connection taking one must show, in its first
request head, that it claims to be one (the route's `trusts`), and it is unproven until that
request is answered other than 401/403 (an HMAC signature is checked only against the body);
an address may hold at most UNPROVEN_PER_CLIENT unproven reserved places, so a flood of idle,
unauthenticated or wrongly signed connections from a few addresses fills the shared places
but not the reserve.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import Enum

# All connections of one server: webhook senders are a few registries with small pools, plus
# Prometheus and operators; 256 is far above that and, at ~40 KiB each (task, h11 state,
# buffers), bounds them to ~10 MiB. systemd's LimitNOFILE is set well above it.
MAX_CONNECTIONS = 256
# One peer address: Go's HTTP client (distribution's notifications) keeps 2 idle connections per
# host and opens more only for concurrent sends; a proxy in front of several registries shares
# one address, hence room for 32.
MAX_CONNECTIONS_PER_CLIENT = 32
# The bridge's places beyond MAX_CONNECTIONS for authenticated senders: as many as one address
# may hold, so a registry's notifications keep their pool under a flood.
RESERVED_FOR_TRUSTED = 32
# Reserved places an address may hold before its first head shows it authenticated: one lets an
# authenticated sender in on any connection, and a flood from N addresses takes at most N.
UNPROVEN_PER_CLIENT = 1


class Place(Enum):
    """Where an admitted connection counts: a shared place, or one of the reserve."""

    SHARED = "shared"
    RESERVED = "reserved"


# What a refused connection is told before it is closed (written without waiting for it).
_REFUSAL_TEXT = b"too many connections; retry\n"
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"retry-after: 1\r\nconnection: close\r\n"
    b"content-length: " + str(len(_REFUSAL_TEXT)).encode() + b"\r\n\r\n" + _REFUSAL_TEXT
)


@dataclass(slots=True)
class Admission:
    """Counts open connections, in total and per client; `admit` refuses over either cap."""

    max_connections: int = MAX_CONNECTIONS
    max_per_client: int = MAX_CONNECTIONS_PER_CLIENT
    reserved: int = 0  # places beyond max_connections for authenticated senders
    open: int = 0
    refused: int = 0
    _per_client: Counter[str] = field(default_factory=Counter)
    _in_reserve: int = 0
    _unproven: Counter[str] = field(default_factory=Counter)

    def admit(self, client: str) -> Place | None:
        """Take a connection of `client` if the caps allow it (then `release` it later): a
        shared place, else an (unproven) reserved one, else None (refused)."""
        if self._per_client[client] < self.max_per_client:
            if self.open - self._in_reserve < self.max_connections:
                self._take(client)
                return Place.SHARED
            if self._in_reserve < self.reserved and self._unproven[client] < UNPROVEN_PER_CLIENT:
                self._take(client)
                self._in_reserve += 1
                self._unproven[client] += 1
                return Place.RESERVED
        self.refused += 1
        return None

    def _take(self, client: str) -> None:
        self.open += 1
        self._per_client[client] += 1

    def proven(self, client: str) -> None:
        """A reserved connection of `client` had its first request answered as an
        authenticated sender's: it no longer counts against the address's unproven places."""
        self._unproven[client] -= 1
        if self._unproven[client] <= 0:
            del self._unproven[client]

    def release(self, client: str, place: Place = Place.SHARED, *, proven: bool = False) -> None:
        """Give back a connection `admit` took (at `place`; `proven` if it was `proven`)."""
        self.open -= 1
        self._per_client[client] -= 1
        if self._per_client[client] <= 0:
            del self._per_client[client]
        if place is Place.RESERVED:
            self._in_reserve -= 1
            if not proven:
                self.proven(client)
