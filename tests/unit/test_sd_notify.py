"""sd_notify over a real AF_UNIX datagram socket, as systemd listens for it."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from replicator.daemon.sd_notify import Notifier


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """A datagram socket bound to a file path, as $NOTIFY_SOCKET names it."""
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(2.0)
        yield str(path), sock


def received(sock: socket.socket) -> list[str]:
    """The lines of the next datagram."""
    return sock.recv(4096).decode().split("\n")


class TestNotifier:
    def test_ready_with_status(self, listener: tuple[str, socket.socket]) -> None:
        """READY=1 and a one-line STATUS arrive in one datagram."""
        path, sock = listener
        assert Notifier(path).ready("connected\nand subscribed")
        assert received(sock) == ["READY=1", "STATUS=connected and subscribed"]

    @pytest.mark.parametrize(
        ("send", "expected"),
        [
            pytest.param(lambda n: n.watchdog(), ["WATCHDOG=1"], id="watchdog"),
            pytest.param(lambda n: n.stopping(), ["STOPPING=1"], id="stopping"),
            pytest.param(
                lambda n: n.status("draining 3 jobs"), ["STATUS=draining 3 jobs"], id="status"
            ),
        ],
    )
    def test_messages(
        self,
        listener: tuple[str, socket.socket],
        send: Callable[[Notifier], bool],
        expected: list[str],
    ) -> None:
        """Each notification sends its protocol line."""
        path, sock = listener
        assert send(Notifier(path))
        assert received(sock) == expected

    def test_abstract_namespace(self) -> None:
        """An address starting with '@' is a socket in the abstract namespace."""
        name = f"replicator-test-{uuid.uuid4().hex}"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind("\0" + name)
            sock.settimeout(2.0)
            assert Notifier("@" + name).ready()
            assert received(sock) == ["READY=1"]

    def test_unset_is_a_no_op(self) -> None:
        """Without $NOTIFY_SOCKET nothing is sent and nothing fails."""
        notifier = Notifier.from_environment({})
        assert not notifier.enabled
        assert not notifier.ready()
        assert notifier.watchdog_interval is None

    def test_missing_socket_is_logged_not_raised(self, tmp_path: Path) -> None:
        """A socket path that does not exist makes notify return False, not raise."""
        assert not Notifier(str(tmp_path / "absent.sock")).ready()


class TestWatchdog:
    @pytest.mark.parametrize(
        ("environ", "interval"),
        [
            pytest.param({"WATCHDOG_USEC": "10000000"}, 5.0, id="half-of-usec"),
            pytest.param({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}, None, id="other-pid"),
            pytest.param({"WATCHDOG_USEC": "0"}, None, id="zero"),
            pytest.param({"WATCHDOG_USEC": "soon"}, None, id="not-a-number"),
            pytest.param({}, None, id="unset"),
        ],
    )
    def test_interval_from_environment(
        self, environ: dict[str, str], interval: float | None
    ) -> None:
        """The ping interval is half of $WATCHDOG_USEC, only for the pid systemd named."""
        notifier = Notifier.from_environment({"NOTIFY_SOCKET": "/run/notify", **environ})
        assert notifier.watchdog_interval == interval

    async def test_loop_pings(self, listener: tuple[str, socket.socket]) -> None:
        """The watchdog loop sends WATCHDOG=1 repeatedly at its interval."""
        path, sock = listener
        sock.setblocking(False)
        environ = {
            "NOTIFY_SOCKET": path,
            "WATCHDOG_USEC": "40000",
            "WATCHDOG_PID": str(os.getpid()),
        }
        loop = asyncio.create_task(Notifier.from_environment(environ).watchdog_loop())
        await asyncio.sleep(0.1)
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        pings = []
        while True:
            try:
                pings.append(sock.recv(64))
            except BlockingIOError:
                break
        assert len(pings) >= 3
        assert set(pings) == {b"WATCHDOG=1"}

    async def test_loop_without_watchdog_returns(self) -> None:
        """Without a watchdog the loop returns at once instead of sleeping forever."""
        async with asyncio.timeout(1.0):
            await Notifier(None).watchdog_loop()
