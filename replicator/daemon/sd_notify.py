"""systemd's notify protocol: READY=1, WATCHDOG=1, STOPPING=1 and STATUS= over $NOTIFY_SOCKET.

The protocol is one datagram per notification to the AF_UNIX socket named by $NOTIFY_SOCKET
(a leading '@' means the abstract namespace). Outside systemd the variable is unset and every
call is a no-op. A failed send is logged, never raised: notifying must not stop the daemon.

    notifier = Notifier.from_environment()
    notifier.ready("connected to 127.0.0.1:1883")
    tg.create_task(notifier.watchdog_loop())      # returns at once when no watchdog is asked
    ...
    notifier.stopping()
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Mapping

from replicator.logs import get_logger

log = get_logger(__name__)

# systemd's advice (sd_watchdog_enabled(3)): ping at half the watchdog interval, so one late
# ping does not get the service killed.
WATCHDOG_PING_FRACTION = 0.5
_MICROSECONDS = 1_000_000


class Notifier:
    """Sends notifications to one socket address; `address` None means not under systemd."""

    def __init__(self, address: str | None, *, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """Read $NOTIFY_SOCKET, $WATCHDOG_USEC and $WATCHDOG_PID (which must be our pid)."""
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        watchdog_usec: int | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            watchdog_usec = int(usec)
        return cls(address, watchdog_usec=watchdog_usec)

    @property
    def enabled(self) -> bool:
        """Whether notifications go anywhere."""
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings, or None when systemd asked for none."""
        if self.address is None or self.watchdog_usec is None:
            return None
        return self.watchdog_usec / _MICROSECONDS * WATCHDOG_PING_FRACTION

    def notify(self, *assignments: str) -> bool:
        """Send `KEY=value` lines as one datagram; True when sent, False otherwise."""
        if self.address is None:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        message = "\n".join(assignments).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(target)
                sock.sendall(message)
        except OSError as exc:
            log.warning("sd_notify_failed", socket=self.address, error=str(exc))
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """READY=1: startup finished (connected and subscribed), with an optional status."""
        return self.notify("READY=1", *_status(status))

    def stopping(self, status: str | None = None) -> bool:
        """STOPPING=1: shutdown began."""
        return self.notify("STOPPING=1", *_status(status))

    def status(self, text: str) -> bool:
        """STATUS=...: a one-line status for `systemctl status`."""
        return self.notify(*_status(text))

    def watchdog(self) -> bool:
        """WATCHDOG=1: still alive."""
        return self.notify("WATCHDOG=1")

    async def watchdog_loop(self) -> None:
        """Ping the watchdog forever at `watchdog_interval`; return at once without one."""
        interval = self.watchdog_interval
        if interval is None:
            return
        while True:
            self.watchdog()
            await asyncio.sleep(interval)


def _status(text: str | None) -> tuple[str, ...]:
    if text is None:
        return ()
    return ("STATUS=" + " ".join(text.split()),)  # one line: newlines would end the field
