"""A datagram socket standing in for systemd's $NOTIFY_SOCKET, for tests of what a process
tells systemd (READY=1, WATCHDOG=1, STATUS=...)."""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

# A datagram carries a few short lines; systemd itself reads at most this much of one.
MAX_DATAGRAM = 4096
# How often the reader thread looks whether it should stop.
POLL_SECONDS = 0.1


class NotifyListener:
    """Bound to a socket file in a short temporary folder (AF_UNIX paths are limited to 107
    bytes, which a pytest tmp_path can exceed); a thread stamps each datagram on arrival."""

    def __init__(self) -> None:
        self._folder = Path(tempfile.mkdtemp(prefix="notify-", dir="/tmp"))
        self.path = str(self._folder / "sock")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.path)
        self._sock.settimeout(POLL_SECONDS)
        self._lock = threading.Lock()
        self._closed = threading.Event()
        # (monotonic time received, the datagram's KEY=value lines)
        self._received: list[tuple[float, list[str]]] = []
        self._reader = threading.Thread(target=self._read, name="notify-listener", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                data = self._sock.recv(MAX_DATAGRAM)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._received.append((time.monotonic(), data.decode().split("\n")))

    def __enter__(self) -> NotifyListener:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._closed.set()
        self._reader.join()
        self._sock.close()
        shutil.rmtree(self._folder, ignore_errors=True)

    def received(self) -> list[tuple[float, list[str]]]:
        """Every datagram so far with its arrival time, in order."""
        with self._lock:
            return list(self._received)

    def lines(self) -> list[str]:
        """Every line of every datagram so far, in order."""
        return [line for _, lines in self.received() for line in lines]

    def times_of(self, line: str) -> list[float]:
        """When each datagram carrying `line` (WATCHDOG=1, READY=1) arrived."""
        return [at for at, lines in self.received() if line in lines]

    def statuses(self) -> list[str]:
        """The STATUS= texts so far, in order."""
        return [line.removeprefix("STATUS=") for line in self.lines() if line.startswith("STATUS=")]
