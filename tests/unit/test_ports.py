"""The suite's port allocator: each pytest process (xdist worker) hands out ports no other does."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.ports import (
    BLOCKS,
    EPHEMERAL_DEFAULT_START,
    FIRST_PORT,
    block_index,
    free_port,
    port_block,
)

ROOT = Path(__file__).resolve().parents[2]
# Enough ports from each process to show the blocks apart, few enough to take a moment.
PORTS_PER_PROCESS = 200


@pytest.mark.parametrize(
    ("worker", "block"),
    [
        (None, 0),
        ("gw0", 1),
        ("gw1", 2),
        (f"gw{BLOCKS - 2}", BLOCKS - 1),
        (f"gw{BLOCKS - 1}", 1),  # past the last block: wraps, never to the serial run's block
        ("master", 0),
        ("gwx", 0),
    ],
)
def test_each_worker_has_its_block(worker: str | None, block: int) -> None:
    """Without xdist the process takes block 0; worker gwN takes block N + 1, wrapping."""
    assert block_index(worker) == block


def test_blocks_are_disjoint_and_below_the_ephemeral_range() -> None:
    """No two blocks share a port, and none reaches the kernel's ephemeral ports (port 0 binds
    and outgoing connections) or the well-known ports below FIRST_PORT."""
    blocks = [
        port_block(f"gw{n - 1}" if n else None, EPHEMERAL_DEFAULT_START) for n in range(BLOCKS)
    ]
    ports = [port for block in blocks for port in block]
    assert len(ports) == len(set(ports))
    assert min(ports) >= FIRST_PORT
    assert max(ports) < EPHEMERAL_DEFAULT_START


def test_a_process_hands_no_port_twice_and_each_binds() -> None:
    """Consecutive ports of one process differ, lie in its block, and bind."""
    block = port_block(os.environ.get("PYTEST_XDIST_WORKER"), EPHEMERAL_DEFAULT_START)
    ports = [free_port() for _ in range(PORTS_PER_PROCESS)]
    assert len(set(ports)) == PORTS_PER_PROCESS
    assert all(port in block for port in ports)
    for port in ports[:10]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))


def test_two_workers_never_hand_out_the_same_port() -> None:
    """Two processes as xdist workers gw0 and gw1, asking at the same time, get disjoint ports."""
    program = (
        "import json; from tests.support.ports import free_port;"
        f" print(json.dumps([free_port() for _ in range({PORTS_PER_PROCESS})]))"
    )
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", program],
            cwd=ROOT,
            env={**os.environ, "PYTEST_XDIST_WORKER": worker},
            stdout=subprocess.PIPE,
            text=True,
        )
        for worker in ("gw0", "gw1")
    ]
    handed = [set(json.loads(run.communicate(timeout=60)[0])) for run in runs]
    assert all(len(ports) == PORTS_PER_PROCESS for ports in handed)
    assert not handed[0] & handed[1]
