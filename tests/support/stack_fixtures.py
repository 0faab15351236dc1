"""End-to-end stack fixtures: a whole scenario (use1, usw2, euw1, a broker, the bridge and the
daemon of tests/support/daemon.py) started by one call and taken down after the test.

`stack_factory(**options)` starts a stack in the test's tmp_path with fresh registries and a
broker of its own (tests stop, wipe and restart them); `options` are start_stack's (settings such
as `max_attempts`, `journal_url`, `shared_group`, `front`, `start_daemon`, `notifications`).
After the test its daemon and bridge are stopped and its registries and broker stopped and
deleted, so a long session does not keep every test's processes running.
`module_stack_factory` does the same for a stack a module's tests share, after the module.
`proxied_stack(...)` starts a stack with one registry read through a fault proxy and delete
replication on (`with_delete_replication`), and takes both down on leaving.
`fleet_member(stack, name)` is another daemon on the stack's registries, broker and journal (a
fleet member); `start_all` and `stop_all` start or stop several daemons at once (each waits for
the others' start-up or drain otherwise, seconds each on a loaded machine).
"""

from __future__ import annotations

import dataclasses
import signal
import subprocess
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import pytest

from tests.support.daemon import (
    DaemonProcess,
    RegistrySpec,
    Stack,
    start_stack,
    topology,
    write_config,
)
from tests.support.fault_proxy import FaultProxy
from tests.support.mqtt_fixtures import Mosquitto, MosquittoFactory
from tests.support.ports import free_port
from tests.support.registry_fixtures import RegistryFactory
from tests.support.registry_server import Registry


class StackFactory(Protocol):
    """Starts a stack in the test's tmp_path/`name`, with start_stack's options."""

    def __call__(self, name: str = "stack", **options: Any) -> Stack: ...


@contextmanager
def _stacks(
    registry_factory: RegistryFactory, mosquitto_factory: MosquittoFactory, folder: Path
) -> Iterator[StackFactory]:
    """Starts stacks in `folder`; on leaving, each is stopped and its registries and broker
    stopped and deleted."""
    started: list[Stack] = []

    def start(name: str = "stack", **options: Any) -> Stack:
        stack = start_stack(
            folder / name,
            mosquitto_factory(),
            lambda url: registry_factory(notifications_url=url),
            **options,
        )
        started.append(stack)
        return stack

    try:
        yield start
    finally:
        for stack in started:
            stack.stop()
            for registry in stack.registries.values():
                registry.terminate()
        for stack in started:
            for registry in stack.registries.values():
                registry.cleanup()
            stack.broker.cleanup()


@pytest.fixture
def stack_factory(
    registry_factory: RegistryFactory, mosquitto_factory: MosquittoFactory, tmp_path: Path
) -> Iterator[StackFactory]:
    """Starts fresh stacks (own registries, own broker); each is taken down after the test."""
    with _stacks(registry_factory, mosquitto_factory, tmp_path) as start:
        yield start


@pytest.fixture(scope="module")
def module_stack_factory(
    registry_factory: RegistryFactory,
    mosquitto_factory: MosquittoFactory,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[StackFactory]:
    """As stack_factory, for a stack a module's tests share: taken down after the module."""
    with _stacks(registry_factory, mosquitto_factory, tmp_path_factory.mktemp("stacks")) as start:
        yield start


def with_delete_replication(spec: RegistrySpec) -> RegistrySpec:
    """The spec with deleteReplication on in every rule, and ecr:BatchDeleteImage allowed."""
    replication = spec.replication
    if replication is not None:
        rules = [dict(r, deleteReplication={"enabled": True}) for r in replication["rules"]]
        replication = {"rules": rules}
    policy = spec.policy
    if policy is not None:
        statements = [
            dict(s, Action=[*s["Action"], "ecr:BatchDeleteImage"]) for s in policy["Statement"]
        ]
        policy = dict(policy, Statement=statements)
    return replace(spec, replication=replication, policy=policy)


@contextmanager
def proxied_stack(
    folder: Path,
    broker: Mosquitto,
    start_registry: Callable[[str | None], Registry],
    *,
    behind: str,
    **options: Any,
) -> Iterator[tuple[Stack, FaultProxy]]:
    """A stack (start_stack's `options`) whose daemon reads registry `behind` through a fault
    proxy, delete replication on in every rule, and the proxy; both stopped on leaving."""
    proxies: list[FaultProxy] = []

    def behind_proxy(registry: Registry) -> str:
        proxies.append(FaultProxy(registry.url).start())
        return proxies[-1].url

    stack = start_stack(
        folder, broker, start_registry, start_daemon=False, front={behind: behind_proxy}, **options
    )
    try:
        urls = {name: registry.url for name, registry in stack.registries.items()}
        urls[behind] = proxies[0].url
        specs = [with_delete_replication(spec) for spec in topology(urls)]
        write_config(stack.folder, specs, stack.settings)
        stack.daemon.start()
        yield stack, proxies[0]
    finally:
        stack.stop()
        for proxy in proxies:
            proxy.stop()


def fleet_member(stack: Stack, name: str) -> DaemonProcess:
    """Another daemon (not started) on the stack's registries, broker and journal, with client id
    and folder `name` beside the stack's: a member of its fleet when the stack has a
    shared_group."""
    settings = dataclasses.replace(stack.settings, client_id=name, http_port=free_port())
    urls = {registry: server.url for registry, server in stack.registries.items()}
    config = write_config(stack.folder.parent / name, topology(urls), settings)
    return DaemonProcess(config, settings.http_port)


def start_all(daemons: Sequence[DaemonProcess]) -> None:
    """Start every daemon, then wait until each is ready: their start-ups overlap."""
    for daemon in daemons:
        daemon.start(ready=False)
    for daemon in daemons:
        daemon.wait_ready()


def stop_all(daemons: Sequence[DaemonProcess]) -> None:
    """SIGTERM every running daemon, then wait for each (SIGKILL for one that hangs): their
    drains overlap."""
    running = [daemon for daemon in daemons if daemon.running]
    for daemon in running:
        daemon.send(signal.SIGTERM)
    for daemon in running:
        try:
            daemon.wait()
        except subprocess.TimeoutExpired:
            daemon.kill()
