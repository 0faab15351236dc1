"""Twenty mistakes a new user makes, each run through the real CLI against real servers
(docker-registry, with and without Basic auth; a closed port for the broker and a registry
that is not there): every error names what was wrong and what to do — the registry, where the
credentials came from, the flag or the config key. The list, with the messages before and
after, is in the project notes (webhooks-mistakes.md)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.copy_corpus import CopyCorpus
from tests.support.registry_fixtures import RegistryFactory
from tests.support.registry_server import Registry

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# A CLI run that fails on its first request; the daemon cases stop at the awaited line.
RUN_TIMEOUT_SECONDS = 60.0
# How long `replicator run` may take to log its first failed broker connection.
BROKER_LINE_SECONDS = 30.0
USER, PASSWORD = "alice", "secret"


@dataclass(frozen=True)
class Scene:
    """The servers and files the mistakes are made against."""

    source: CopyCorpus
    locked: Registry  # Basic auth: alice / secret
    plain: Registry
    folder: Path
    closed_port: int
    plain_http_elsewhere: str | None  # host:port of the source on a non-loopback address

    def config(self, name: str, **changes: str) -> str:
        """A config file (written to the folder) of two registries and a journal, with
        `changes` (old text -> new text) applied."""
        rules = self.folder / "use1.json"
        if not rules.exists():
            destination = {"region": "us-west-2", "registryId": "111122223333"}
            rules.write_text(json.dumps({"rules": [{"destinations": [destination]}]}))
        text = f"""version = 1
[journal]
url = "sqlite:///{self.folder}/journal.db"
[mqtt]
host = "127.0.0.1"
port = {self.closed_port}
client_id = "mistakes"
events_topic = "registry/+/events"
[http]
listen = "127.0.0.1:0"
[registries.use1]
account = "111122223333"
region = "us-east-1"
url = "{self.source.registry.url}"
replication = "{rules}"
[registries.usw2]
account = "111122223333"
region = "us-west-2"
url = "{self.plain.url}"
"""
        for old, new in changes.items():
            assert old in text, old
            text = text.replace(old, new)
        path = self.folder / name
        path.write_text(text)
        return str(path)

    def rules(self, name: str, document: object) -> str:
        """A replication rules file; returns its path."""
        path = self.folder / name
        path.write_text(json.dumps(document))
        return str(path)


@dataclass(frozen=True)
class Mistake:
    """A mistake: the command made, its exit code, and what the message must say."""

    name: str
    command: Callable[[Scene], list[str]]
    exit_code: int
    says: tuple[str, ...]  # what was wrong and what to do, each as a substring
    until: str | None = None  # a daemon: stop it once its stderr shows this
    config_variable: str | None = None  # $REPLICATOR_CONFIG, when the mistake is in it


def _ref(scene: Scene, repository: str = "team/app", tag: str = "v1") -> str:
    return scene.source.ref(repository, tag)


MISTAKES = [
    Mistake("wrong-password",
            lambda s: ["copy", _ref(s), f"{s.locked.host}/team/app:v1",
                       "--dest-creds", f"{USER}:wrong"],
            1, ("refused the credentials of --dest-creds", "wrong user or password",
                "correct them")),
    Mistake("missing-credentials",
            lambda s: ["copy", _ref(s), f"{s.locked.host}/team/app:v1"],
            1, ("requires credentials", "none are configured", "--src-creds/--dest-creds",
                "password_file")),
    Mistake("plain-http-registry",
            lambda s: ["copy", f"{s.plain_http_elsewhere}/team/app:v1",
                       f"{s.plain.host}/team/app:v1"],
            1, ("plain HTTP, not TLS", "--src-tls-verify=false", 'url = "http://')),
    Mistake("missing-config-file",
            lambda s: ["config", "check", str(s.folder / "absent.toml")],
            2, ("cannot read the config file", "No such file", "--config FILE",
                "$REPLICATOR_CONFIG")),
    Mistake("config-variable-names-no-file",
            lambda s: ["jobs"],
            2, ("from $REPLICATOR_CONFIG", "No such file", "--config FILE"),
            config_variable="/absent/replicator.toml"),
    Mistake("unknown-source-in-status",
            lambda s: ["status", "--repository", "team/app", "--image-tag", "v1",
                       "--source", "use9", "--config", s.config("status.toml")],
            2, ("--source 'use9' is not a registry of the config", "use1, usw2",
                "leave --source out")),
    Mistake("events-topic-without-source-level",
            lambda s: ["config", "check",
                       s.config("topic.toml", **{'"registry/+/events"': '"registry/events"'})],
            2, ("mqtt.events_topic", "exactly one '+'", "registry/+/events")),
    Mistake("broker-down",
            lambda s: ["run", "--config", s.config("broker.toml")],
            0, ("mqtt_connect_failed", "Connection refused", "[mqtt] host and port"),
            until="mqtt_connect_failed"),
    Mistake("bad-rule-pattern",
            lambda s: ["config", "check", s.config("rule.toml", **{
                "use1.json": Path(s.rules("bad-rule.json", {"rules": [{
                    "destinations": [{"region": "us-west-2", "registryId": "111122223333"}],
                    "repositoryFilters": [{"filter": "prod/[", "filterType": "PREFIX_MATCH"}],
                }]})).name})],
            2, ("rules[0].repositoryFilters[0].filter", "characters outside", "bad-rule.json")),
    Mistake("misspelt-config-key",
            lambda s: ["config", "check",
                       s.config("key.toml", **{'region = "us-west-2"': 'regoin = "us-west-2"'})],
            2, ("registries.usw2.regoin: unknown key", "did you mean 'region'")),
    Mistake("tag-that-does-not-exist",
            lambda s: ["copy", _ref(s, tag="v9"), f"{s.plain.host}/team/app:v9"],
            1, ("not found", "no tag 'v9' in team/app", "skopeo list-tags")),
    Mistake("prefix-with-no-repository",
            lambda s: ["copy", "-r", f"{s.source.registry.host}/nothing-here",
                       f"{s.plain.host}/nothing-here"],
            2, ("no repository under", "check the prefix", "--repository NAME")),
    Mistake("registry-not-running",
            lambda s: ["copy", f"127.0.0.1:{s.closed_port}/team/app:v1",
                       f"{s.plain.host}/team/app:v1"],
            1, ("nothing listens there", "is the registry running", "host and port")),
    Mistake("journal-folder-missing",
            lambda s: ["jobs", "--config", s.config("journal.toml", **{
                f"sqlite:///{s.folder}/journal.db": f"sqlite:///{s.folder}/absent/j.db"})],
            74, ("cannot be opened", "absent does not exist", "journal.url")),
    Mistake("password-file-missing",
            lambda s: ["config", "check", s.config("password.toml", **{
                f'url = "{s.plain.url}"\n':
                f'url = "{s.plain.url}"\nusername = "{USER}"\npassword_file = "/absent/pw"\n'})],
            2, ("registries.usw2.password_file", "cannot read /absent/pw")),
    Mistake("config-not-toml",
            lambda s: ["config", "check",
                       s.config("toml.toml", **{'client_id = "mistakes"': "client_id = mistakes"})],
            2, ("not valid TOML", "line 7")),
    Mistake("listen-address-in-use",
            lambda s: ["run", "--config", s.config("listen.toml", **{
                'listen = "127.0.0.1:0"': f'listen = "127.0.0.1:{_held_port()}"'})],
            2, ("cannot listen on", "address already in use", "http.listen")),
    Mistake("url-without-scheme",
            lambda s: ["config", "check", s.config("scheme.toml", **{
                f'url = "{s.plain.url}"': f'url = "{s.plain.host}"'})],
            2, ("registries.usw2.url", "is not http(s)://host[:port]")),
    Mistake("rule-to-no-registry",
            lambda s: ["config", "check", s.config("far.toml", **{
                "use1.json": Path(s.rules("far.json", {"rules": [{"destinations": [
                    {"region": "eu-west-9", "registryId": "111122223333"}]}]})).name})],
            2, ("registryId 111122223333 region eu-west-9", "names no registry of this config")),
    Mistake("reference-without-host",
            lambda s: ["copy", "team/app:v1", f"{s.plain.host}/team/app:v1"],
            2, ("'team/app:v1' does not start with a registry host", "host[:port]/repo")),
]  # fmt: skip

# A listening socket the listen-address mistake's daemon cannot bind: held for the module.
_HELD: list[socket.socket] = []


def _held_port() -> int:
    if not _HELD:
        held = socket.socket()
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        _HELD.append(held)
    return int(_HELD[0].getsockname()[1])


def _outbound_address() -> str | None:
    """A non-loopback address of this machine (the one its default route leaves by), or None:
    the plain-HTTP registry must not be on loopback, which is plain HTTP by rule."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") else address


@contextlib.contextmanager
def _forwarded(address: str, port: int) -> Iterator[int]:
    """A TCP forwarder on `address` to 127.0.0.1:`port`; yields its port."""
    server = socket.create_server((address, 0))

    def pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = server.accept()
                upstream = socket.create_connection(("127.0.0.1", port))
                for ends in ((client, upstream), (upstream, client)):
                    threading.Thread(target=pipe, args=ends, daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield int(server.getsockname()[1])
    finally:
        server.close()


@pytest.fixture(scope="module")
def scene(
    copy_corpus: CopyCorpus,
    registry_factory: RegistryFactory,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Scene]:
    """The servers of the mistakes: the corpus's source, a Basic-auth registry, a plain one."""
    locked = registry_factory(auth=(USER, PASSWORD))
    plain = registry_factory()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = int(probe.getsockname()[1])
    address = _outbound_address()
    folder = tmp_path_factory.mktemp("mistakes")
    with contextlib.ExitStack() as stack:
        elsewhere = None
        if address is not None:
            port = stack.enter_context(_forwarded(address, copy_corpus.registry.port))
            elsewhere = f"{address}:{port}"
        yield Scene(copy_corpus, locked, plain, folder, closed_port, elsewhere)
    for held in _HELD:
        held.close()


def cli(args: list[str], until: str | None, env: dict[str, str]) -> tuple[int, str]:
    """Run `python -m replicator ARGS` as a user would; (exit code, stderr and stdout). With
    `until`, a daemon is stopped (exit 0 here) as soon as its stderr shows that text."""
    command = [sys.executable, "-m", "replicator", *args]
    if until is None:
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False,
                              cwd=PROJECT_ROOT, timeout=RUN_TIMEOUT_SECONDS)  # fmt: skip
        return done.returncode, done.stderr + done.stdout
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               text=True, env=env, cwd=PROJECT_ROOT)  # fmt: skip
    assert process.stderr is not None
    seen: list[str] = []
    deadline = time.monotonic() + BROKER_LINE_SECONDS
    try:
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line:
                break
            seen.append(line)
            if until in line:
                return 0, line
    finally:
        process.terminate()
        process.wait(timeout=RUN_TIMEOUT_SECONDS)
    return process.returncode, "".join(seen)


@pytest.mark.slow
@pytest.mark.parametrize("mistake", MISTAKES, ids=lambda m: m.name)
def test_mistake_says_what_to_do(scene: Scene, mistake: Mistake, tmp_path: Path) -> None:
    """The mistake fails (or, for the daemon, warns) with a message naming what was wrong and
    the flag, config key or command that fixes it."""
    if mistake.name == "plain-http-registry" and scene.plain_http_elsewhere is None:
        pytest.skip("this machine has no non-loopback address to serve plain HTTP on")
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPLICATOR_")}
    if mistake.config_variable is not None:
        env["REPLICATOR_CONFIG"] = mistake.config_variable
    env["HOME"] = str(tmp_path)  # no docker login of this machine's user is used
    code, output = cli(mistake.command(scene), mistake.until, env)
    assert code == mistake.exit_code, output
    for text in mistake.says:
        assert text in output, f"{text!r} not in: {output}"
