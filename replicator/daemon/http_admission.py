"""Which connections the HTTP server takes: a cap on all of them and on each client's.

A connection costs a task, h11 state and socket buffers; without a cap, a client opening
thousands (or many clients at once) takes memory and file descriptors from the daemon. Each
client (peer address) gets its share, so one sender cannot crowd out the others.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

# All connections of one server: webhook senders are a few registries with small pools, plus
# Prometheus and operators; 256 is far above that and, at ~40 KiB each (task, h11 state,
# buffers), bounds them to ~10 MiB. systemd's LimitNOFILE is set well above it.
MAX_CONNECTIONS = 256
# One peer address: Go's HTTP client (distribution's notifications) keeps 2 idle connections per
# host and opens more only for concurrent sends; a proxy in front of several registries shares
# one address, hence room for 32.
MAX_CONNECTIONS_PER_CLIENT = 32
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
    open: int = 0
    refused: int = 0
    _per_client: Counter[str] = field(default_factory=Counter)

    def admit(self, client: str) -> bool:
        """Take a connection of `client` if both caps allow it (then `release` it later)."""
        if self.open >= self.max_connections or self._per_client[client] >= self.max_per_client:
            self.refused += 1
            return False
        self.open += 1
        self._per_client[client] += 1
        return True

    def release(self, client: str) -> None:
        """Give back a connection `admit` took."""
        self.open -= 1
        self._per_client[client] -= 1
        if self._per_client[client] <= 0:
            del self._per_client[client]
