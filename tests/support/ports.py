"""Free loopback ports and waiting for a server to listen.

free_port() hands out a port that a server (often a subprocess) binds a moment later. Asking the
kernel for port 0 and closing the socket is racy: another process of the run (an xdist worker)
may be handed the same number before the server binds it. So each pytest process draws from its
own block of ports, below the kernel's ephemeral range (no port 0 bind and no outgoing connection
takes one of these), walking it with a cursor that hands no port twice before the block wraps,
and checking that each port binds before handing it out.
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from pathlib import Path

# The blocks start above the ports well-known servers use (PostgreSQL 5432, Prometheus 9090, ...).
FIRST_PORT = 12000
# Linux's default ephemeral range starts here; the blocks end below it (below the machine's own
# start, when it is lower and still leaves room).
EPHEMERAL_DEFAULT_START = 32768
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
# One block for a run without xdist (and for a worker past the last block) and one for each of
# up to BLOCKS - 1 workers: 8 blocks of ~2,500 ports, more than a worker uses in a session.
BLOCKS = 8


def _ephemeral_start() -> int:
    try:
        start = int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return EPHEMERAL_DEFAULT_START
    return start if start - FIRST_PORT >= BLOCKS * 100 else EPHEMERAL_DEFAULT_START


def block_index(worker: str | None) -> int:
    """The block of the process named `worker` (PYTEST_XDIST_WORKER: gw0, gw1, ...; None without
    xdist): 0 without xdist, gwN in block N + 1, wrapping past the last block to block 1."""
    if worker is None or not worker.startswith("gw") or not worker[2:].isdigit():
        return 0
    return 1 + int(worker[2:]) % (BLOCKS - 1)


def port_block(worker: str | None, ephemeral_start: int) -> range:
    """The ports the process named `worker` hands out."""
    size = (ephemeral_start - FIRST_PORT) // BLOCKS
    first = FIRST_PORT + block_index(worker) * size
    return range(first, first + size)


class _Cursor:
    """Walks this process's block from a random start (so that two runs at once on the machine
    rarely walk the same ports), handing each port once per lap. The block is chosen on the
    first port asked for, when xdist has named the worker."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._block: range | None = None
        self._next = 0

    def take(self) -> int:
        with self._lock:
            if self._block is None:
                worker = os.environ.get("PYTEST_XDIST_WORKER")
                self._block = port_block(worker, _ephemeral_start())
                self._next = random.randrange(len(self._block))
            for _ in range(len(self._block)):
                port = self._block[self._next]
                self._next = (self._next + 1) % len(self._block)
                if _binds(port):
                    return port
        raise OSError(f"no free port in {self._block}")


def _binds(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


_CURSOR = _Cursor()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now and that no other process of
    this run is handed (see the module's docstring)."""
    return _CURSOR.take()


def wait_listening(port: int, *, timeout: float = 15.0, host: str = "127.0.0.1") -> None:
    """Block until something accepts connections on host:port, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")
