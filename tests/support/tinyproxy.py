"""A real forward proxy (Debian's `tinyproxy`) on a free loopback port.

`Tinyproxy(hosts={"registry.behind-proxy.test": "127.0.0.1"})` gives the proxy names that only it
can resolve: it runs in its own mount namespace (`unshare -rm`, a user namespace, no privilege
needed) with a hosts file of its own bound over /etc/hosts. The network is shared, so it listens
on the host's loopback, but the test process cannot resolve those names: a request that does not
go through the proxy fails to connect. That makes "the registry is reachable only through the
proxy" real on one machine.

`requests()` reads the proxy's log: the request lines it served (`GET http://... HTTP/1.1`,
`CONNECT host:port HTTP/1.1`).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.support.ports import free_port, wait_listening

TINYPROXY_BINARY = "/usr/bin/tinyproxy"
UNSHARE_BINARY = "/usr/bin/unshare"
# tinyproxy starts in milliseconds; this leaves room for a loaded 2-core machine.
START_TIMEOUT_SECONDS = 15.0
# Seconds to wait for tinyproxy to stop after SIGTERM; it holds no state.
STOP_TIMEOUT_SECONDS = 5.0
# tinyproxy logs each request line as `Request (file descriptor N): <line>`.
_REQUEST_LINE = re.compile(r"Request \(file descriptor \d+\): (.+)$")


class Tinyproxy:
    """One `tinyproxy -d` process with its own config, log and (optionally) host names."""

    def __init__(self, *, hosts: dict[str, str] | None = None) -> None:
        for binary in (TINYPROXY_BINARY, UNSHARE_BINARY):
            if not Path(binary).exists():
                pytest.fail(f"{binary} is missing: run the project's set-up script")
        self.workdir = Path(tempfile.mkdtemp(prefix="replicator-tinyproxy-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.workdir / "tinyproxy.log"
        config = self.workdir / "tinyproxy.conf"
        # No ConnectPort line: CONNECT is allowed to every port (the registries' are random).
        config.write_text(
            f"Port {self.port}\n"
            "Listen 127.0.0.1\n"
            "Timeout 60\n"
            "LogLevel Info\n"
            "MaxClients 200\n"
            "Allow 127.0.0.1\n"
            "DisableViaHeader Yes\n"
        )
        command = [TINYPROXY_BINARY, "-d", "-c", str(config)]
        if hosts:
            hosts_file = self.workdir / "hosts"
            lines = ["127.0.0.1 localhost", *(f"{ip} {name}" for name, ip in hosts.items())]
            hosts_file.write_text("\n".join(lines) + "\n")
            script = f'mount --bind "{hosts_file}" /etc/hosts && exec "$@"'
            command = [UNSHARE_BINARY, "-rm", "sh", "-c", script, "tinyproxy", *command]
        log = self.log_path.open("ab")
        try:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        finally:
            log.close()
        try:
            self._wait_listening()
        except BaseException:
            self.stop()
            raise

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                log = self.log_path.read_text(errors="replace")
                if "unshare failed" in log:
                    # Containers that forbid user namespaces cannot give the proxy its own
                    # hosts file: the "reachable only through the proxy" setup is impossible.
                    pytest.skip(f"user namespaces are not available here: {log.strip()[-200:]}")
                raise RuntimeError(f"tinyproxy exited at start: {log[-2000:]}")
            try:
                wait_listening(self.port, timeout=0.2)
                return
            except TimeoutError:
                continue
        raise TimeoutError(f"tinyproxy on port {self.port} not ready")

    def requests(self) -> list[str]:
        """The request lines the proxy has received so far, in order."""
        if not self.log_path.exists():
            return []
        found = (_REQUEST_LINE.search(line) for line in self.log_path.read_text().splitlines())
        return [match.group(1) for match in found if match]

    def stop(self) -> None:
        """Stop the process and delete its folder."""
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)
