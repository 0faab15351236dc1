"""What the registry client tells whoever watches it: each request's host, method, status, time.

The daemon's metrics implement `RequestObserver`; the client is given one (or none) by its
pool, so `registry/` never imports the daemon.
"""

from __future__ import annotations

from typing import Protocol


class RequestObserver(Protocol):
    """Told of every HTTP exchange with a registry (redirect hops each count)."""

    def request_done(self, host: str, method: str, status: int | None, seconds: float) -> None:
        """One exchange ended: `status` None when no answer came (connection, TLS, timeout);
        `seconds` from sending to the response's headers."""
