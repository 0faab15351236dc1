"""The logging pipeline: JSON for every line off a terminal, secrets redacted by key pattern."""

from __future__ import annotations

import ast
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from replicator import logs

ROOT = Path(__file__).resolve().parents[2]

# A script run in a child process (stderr a pipe, as under systemd): a real aiomqtt client
# talks to a listener that never answers, so aiomqtt and paho log through the standard library,
# and a task's exception is never retrieved, so asyncio logs it with a traceback.
CHILD = textwrap.dedent(
    """
    import asyncio, gc, logging
    import aiomqtt
    from replicator import logs
    from replicator.logs import get_logger

    async def main():
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            # The logger daemon/bus.py hands to aiomqtt (whose own "mqtt" logger stops at
            # warning): paho's protocol lines come through it at debug.
            client = aiomqtt.Client(
                "127.0.0.1", port, timeout=0.5, logger=logging.getLogger("replicator.mqtt")
            )
            async with client:
                pass
        except aiomqtt.MqttError:
            pass
        async def boom():
            raise RuntimeError("never retrieved")
        task = asyncio.get_running_loop().create_task(boom())
        await asyncio.sleep(0)
        del task
        gc.collect()
        get_logger("child").info("child_done", registry_password="hunter2")
        server.close()

    logs.configure(level="debug")
    asyncio.run(main())
    """
)


@pytest.fixture(scope="module")
def child_lines() -> list[str]:
    """The stderr lines of the child script (run once for the module)."""
    result = subprocess.run(
        [sys.executable, "-c", CHILD],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [line for line in result.stderr.splitlines() if line.strip()]


class TestOnePipeline:
    def test_every_line_is_json_off_a_terminal(self, child_lines: list[str]) -> None:
        """aiomqtt's, asyncio's and our own lines all come out as JSON objects on a pipe."""
        lines = child_lines
        documents = [json.loads(line) for line in lines]
        names = {d.get("logger_name") for d in documents}
        assert "replicator.mqtt" in names
        assert "asyncio" in names
        assert "child" in names
        mqtt = [d["event"] for d in documents if d.get("logger_name") == "replicator.mqtt"]
        assert any("CONNECT" in event for event in mqtt)
        for document in documents:
            assert {"event", "level", "timestamp"} <= document.keys()

    def test_stdlib_traceback_in_the_json(self, child_lines: list[str]) -> None:
        """asyncio's unretrieved task exception carries its traceback inside the JSON line."""
        documents = [json.loads(line) for line in child_lines]
        (crash,) = [d for d in documents if d["logger_name"] == "asyncio" and d["level"] == "error"]
        assert crash["level"] == "error"
        assert "RuntimeError: never retrieved" in crash["exception"]

    def test_level_applies_to_stdlib(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Below the configured level a library's record is dropped, at it the record shows."""
        logs.configure(level="warning", json=True)
        library = logging.getLogger("aiomqtt")
        library.info("quiet")
        library.warning("loud %s", "arg")
        lines = capsys.readouterr().err.splitlines()
        assert [json.loads(line)["event"] for line in lines] == ["loud arg"]

    def test_chatty_libraries_stay_quiet(self, capsys: pytest.CaptureFixture[str]) -> None:
        """httpx's per-request INFO line (token fetches) is not logged, even at debug."""
        logs.configure(level="debug", json=True)
        logging.getLogger("httpx").info("HTTP Request: GET https://auth.example/token")
        logging.getLogger("httpx").warning("kept")
        lines = capsys.readouterr().err.splitlines()
        assert [json.loads(line)["event"] for line in lines] == ["kept"]

    def test_configure_twice_keeps_one_handler(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Configuring again replaces the root handler: a record is written once, not twice."""
        logs.configure(level="info", json=True)
        logs.configure(level="info", json=True)
        logging.getLogger("asyncio").warning("once")
        assert len(capsys.readouterr().err.splitlines()) == 1


class TestRedaction:
    @pytest.mark.parametrize(
        "key",
        ["password", "registry_password", "client_secret", "token", "bearer_token",
         "Authorization", "proxy_authorization", "credentials", "SECRET"],
    )  # fmt: skip
    def test_secret_keys_redacted(self, key: str) -> None:
        """A field whose name contains a secret's word has its value replaced."""
        event: dict[str, Any] = {key: "hunter2", "event": "x"}
        assert logs.drop_secrets(None, "info", event)[key] == logs.REDACTED

    @pytest.mark.parametrize(
        "key", ["source", "destination", "source_image", "digest", "error", "host", "event"]
    )
    def test_other_keys_kept(self, key: str) -> None:
        """Ordinary fields pass through unchanged."""
        event: dict[str, Any] = {key: "value"}
        assert logs.drop_secrets(None, "info", event)[key] == "value"

    def test_redacted_in_the_child_output(self, child_lines: list[str]) -> None:
        """End to end: `registry_password` logged by mistake never reaches stderr."""
        lines = child_lines
        assert not any("hunter2" in line for line in lines)
        (done,) = [json.loads(line) for line in lines if "child_done" in line]
        assert done["registry_password"] == logs.REDACTED


# Log keys that would not say which of a registry's name, address or an image is meant.
AMBIGUOUS_KEYS = {"registry", "image", "ref"}
LEVELS = {"debug", "info", "warning", "error", "exception", "critical", "bind"}
SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")


def log_calls() -> list[tuple[str, int, ast.Call]]:
    """Every structlog call in replicator/ (`log.info(...)`, `bound.bind(...)`, ...)."""
    found = []
    for path in sorted((ROOT / "replicator").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in LEVELS
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id in {"log", "bound", "logger"}
            ):
                found.append((str(path.relative_to(ROOT)), node.lineno, node))
    return found


class TestKeyConventions:
    def test_calls_found(self) -> None:
        """The scan sees the code's log calls (dozens), so the checks below are live."""
        assert len(log_calls()) > 50

    def test_no_ambiguous_keys(self) -> None:
        """`source`/`destination` name registries, `host` an address, `*_image` a reference:
        no log line says just `registry` or `image`."""
        bad = [
            f"{path}:{line} {keyword.arg}"
            for path, line, call in log_calls()
            for keyword in call.keywords
            if keyword.arg in AMBIGUOUS_KEYS
        ]
        assert not bad

    def test_snake_case_events_and_keys(self) -> None:
        """Event names and field names are snake_case."""
        bad = []
        for path, line, call in log_calls():
            first = call.args[0] if call.args else None
            literal = isinstance(first, ast.Constant) and isinstance(first.value, str)
            if literal and not SNAKE.match(first.value):  # type: ignore[union-attr]
                bad.append(f"{path}:{line} event {first.value!r}")
            bad += [
                f"{path}:{line} key {k.arg!r}"
                for k in call.keywords
                if k.arg is not None and not SNAKE.match(k.arg)
            ]
        assert not bad


# A child under journald: our events at three levels, a standard-library record, a
# `warnings.warn` and an uncaught exception, all on the stderr that JOURNAL_STREAM names.
JOURNALD_CHILD = textwrap.dedent(
    """
    import logging, threading, warnings
    from replicator import logs
    from replicator.logs import get_logger

    logs.configure(level="debug")
    log = get_logger("child")
    log.debug("child_debug")
    log.info("child_info")
    log.warning("child_warning")
    log.error("child_error")
    logging.getLogger("asyncio").critical("library critical")
    warnings.warn("an old option", DeprecationWarning, stacklevel=1)
    worker = threading.Thread(target=lambda: 1 / 0, name="worker")
    worker.start()
    worker.join()
    raise RuntimeError("fatal at start")
    """
)
# sd-daemon(3): the priority a line carries before its text, by our level names.
SD_PRIORITIES = {"critical": 2, "error": 3, "warning": 4, "info": 6, "debug": 7}
PRIORITY_PREFIX = re.compile(r"^<(\d)>(.*)$")


def stderr_lines(command: list[str], *, name_stderr: bool, tmp_path: Path) -> list[str]:
    """Run `command` with stderr a real file; with `name_stderr`, JOURNAL_STREAM names that
    file's device and inode (as systemd does for a service whose stderr is the journal)."""
    path = tmp_path / "stderr"
    with path.open("wb") as stderr:
        status = os.fstat(stderr.fileno())
        other = os.stat(tmp_path)  # some other file: stderr is not the journal's stream
        named = status if name_stderr else other
        env = {**os.environ, "JOURNAL_STREAM": f"{named.st_dev}:{named.st_ino}"}
        env.pop("NOTIFY_SOCKET", None)
        subprocess.run(
            command, stdout=subprocess.DEVNULL, stderr=stderr, env=env,
            timeout=60, check=False, cwd=ROOT,
        )  # fmt: skip
    return [line for line in path.read_text().splitlines() if line.strip()]


def split_priority(line: str) -> tuple[int | None, dict[str, Any]]:
    """A line's sd-daemon priority (None without a prefix) and its JSON document."""
    match = PRIORITY_PREFIX.match(line)
    if match is None:
        return None, json.loads(line)
    return int(match[1]), json.loads(match[2])


class TestJournald:
    def test_priority_prefix_when_stderr_is_the_journal(self, tmp_path: Path) -> None:
        """With JOURNAL_STREAM naming stderr, every line is `<N>` and a JSON object, N the
        syslog priority of its level: our events, a library's record, a warnings.warn and
        an uncaught exception (in the main thread or another) alike."""
        lines = stderr_lines(
            [sys.executable, "-c", JOURNALD_CHILD], name_stderr=True, tmp_path=tmp_path
        )
        parsed = [split_priority(line) for line in lines]
        assert all(priority is not None for priority, _ in parsed), lines
        by_event = {document["event"]: (priority, document) for priority, document in parsed}
        for level in ("debug", "info", "warning", "error"):
            assert by_event[f"child_{level}"][0] == SD_PRIORITIES[level]
        assert by_event["library critical"][0] == SD_PRIORITIES["critical"]
        (warned,) = [(p, d) for p, d in parsed if "an old option" in d["event"]]
        assert warned[0] == SD_PRIORITIES["warning"]
        assert warned[1]["logger_name"] == "py.warnings"
        (fatal,) = [(p, d) for p, d in parsed if "RuntimeError: fatal at start" in str(d)]
        assert fatal[0] == SD_PRIORITIES["critical"]
        (thread,) = [(p, d) for p, d in parsed if "ZeroDivisionError" in str(d)]
        assert (thread[0], thread[1]["thread"]) == (SD_PRIORITIES["critical"], "worker")

    def test_no_prefix_when_stderr_is_another_stream(self, tmp_path: Path) -> None:
        """JOURNAL_STREAM naming some other file (inherited from a parent) adds no prefix:
        the lines stay plain JSON."""
        lines = stderr_lines(
            [sys.executable, "-c", JOURNALD_CHILD], name_stderr=False, tmp_path=tmp_path
        )
        assert lines
        assert all(split_priority(line)[0] is None for line in lines), lines

    def test_fatal_start_up_error_of_the_daemon(self, tmp_path: Path) -> None:
        """`replicator run` on a config it cannot load writes its reason as one JSON line at
        priority err (3), not as plain text."""
        missing = tmp_path / "absent.toml"
        lines = stderr_lines(
            [sys.executable, "-m", "replicator", "run", "--config", str(missing)],
            name_stderr=True,
            tmp_path=tmp_path,
        )
        parsed = [split_priority(line) for line in lines]
        (failure,) = [(p, d) for p, d in parsed if str(missing) in str(d)]
        assert failure[0] == SD_PRIORITIES["error"]
        assert failure[1]["code"] == "CONFIG_INVALID"

    def test_usage_error_of_a_service(self, tmp_path: Path) -> None:
        """A unit's command line that does not parse (`run --no-such-option`) is one JSON line at
        priority err on the journal, not argparse's plain usage text."""
        lines = stderr_lines(
            [sys.executable, "-m", "replicator", "run", "--no-such-option"],
            name_stderr=True,
            tmp_path=tmp_path,
        )
        parsed = [split_priority(line) for line in lines]
        assert [(p, d["code"]) for p, d in parsed] == [(SD_PRIORITIES["error"], "USAGE")]
        assert "--no-such-option" in parsed[0][1]["error"]
