"""domain.events.echoes: which events are the echo of the daemon's own writes."""

from __future__ import annotations

import pytest

from replicator.domain.events.echoes import (
    ECHO_WINDOW_SECONDS,
    REPLICA_USER_AGENT,
    EchoReason,
    OwnWrite,
    Reported,
    WriteAction,
    is_replica_agent,
    recognise,
    recognise_all,
)

D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
PUSH, DELETE = WriteAction.PUSH, WriteAction.DELETE
NOW = 1_000_000.0


def write(
    action: WriteAction,
    digest: str,
    tag: str | None,
    *,
    ago: float = 1.0,
    echoed: bool = False,
    id: int = 1,
) -> OwnWrite:
    """A write made `ago` seconds before NOW."""
    return OwnWrite(id, action, digest, tag, NOW - ago, echoed)


ECHOES = [
    ("push-under-its-tag", Reported(PUSH, D1, "v1"), [write(PUSH, D1, "v1")]),
    ("child-by-digest", Reported(PUSH, D1, None), [write(PUSH, D1, None)]),
    ("tag-put-reported-by-digest", Reported(PUSH, D1, None), [write(PUSH, D1, "v1")]),
    ("manifest-delete", Reported(DELETE, D1, None), [write(DELETE, D1, None)]),
    ("tag-event-of-a-manifest-delete", Reported(DELETE, None, "v1"), [write(DELETE, D1, None)]),
    (
        "tag-event-after-the-digest-event",
        Reported(DELETE, None, "v1"),
        [write(DELETE, D1, None, echoed=True)],
    ),
    ("tag-delete", Reported(DELETE, None, "v1"), [write(DELETE, "", "v1")]),
    ("late-but-in-window", Reported(PUSH, D1, "v1"), [write(PUSH, D1, "v1", ago=500)]),
]

NEW = [
    ("nothing-written", Reported(PUSH, D1, "v1"), []),
    ("other-digest", Reported(PUSH, D2, "v1"), [write(PUSH, D1, "v1")]),
    ("other-tag", Reported(PUSH, D1, "v2"), [write(PUSH, D1, "v1")]),
    ("push-after-our-delete", Reported(PUSH, D1, "v1"), [write(DELETE, D1, None)]),
    ("delete-after-our-push", Reported(DELETE, D1, None), [write(PUSH, D1, "v1")]),
    ("already-echoed", Reported(PUSH, D1, "v1"), [write(PUSH, D1, "v1", echoed=True)]),
    (
        "digest-delete-after-its-echo",
        Reported(DELETE, D1, None),
        [write(DELETE, D1, None, echoed=True)],
    ),
    ("past-the-window", Reported(PUSH, D1, "v1"), [write(PUSH, D1, "v1", ago=601)]),
    ("docker-agent", Reported(PUSH, D1, "v1", "docker/24.0.7 go/go1.20.10"), []),
    (
        "users-tag-delete-after-our-manifest-delete",
        Reported(DELETE, None, "v1", "skopeo/1.9.3"),
        [write(DELETE, D1, None, echoed=True)],
    ),
    (
        "other-agent-despite-a-matching-write",
        Reported(PUSH, D1, "v1", "docker/24.0.7 go/go1.20.10"),
        [write(PUSH, D1, "v1")],
    ),
    ("replicator-copy-agent", Reported(PUSH, D1, "v1", "replicator"), []),
]


class TestRecognise:
    @pytest.mark.parametrize(
        ("event", "writes"), [c[1:] for c in ECHOES], ids=[c[0] for c in ECHOES]
    )
    def test_echo_of_a_recorded_write(self, event: Reported, writes: list[OwnWrite]) -> None:
        """An event naming what a recorded write did there, within the window, is its echo."""
        echo = recognise(event, writes, now=NOW)
        assert echo is not None
        assert echo.reason is EchoReason.OWN_WRITE
        assert echo.write == (None if writes[0].echoed else writes[0].id)

    @pytest.mark.parametrize(("event", "writes"), [c[1:] for c in NEW], ids=[c[0] for c in NEW])
    def test_new_push_or_delete(self, event: Reported, writes: list[OwnWrite]) -> None:
        """An event no unmatched recorded write explains, from another client, is new work."""
        assert recognise(event, writes, now=NOW) is None

    def test_replica_agent_alone_is_enough(self) -> None:
        """With no write recorded, the sender naming our replication client makes an echo."""
        event = Reported(PUSH, D1, "v1", f"{REPLICA_USER_AGENT} (go-http)")
        echo = recognise(event, [], now=NOW)
        assert echo is not None
        assert (echo.reason, echo.write) == (EchoReason.REPLICA_AGENT, None)

    def test_oldest_write_is_echoed_first(self) -> None:
        """Two writes of the same image: the older one is matched first."""
        writes = [write(PUSH, D1, "v1", ago=1, id=2), write(PUSH, D1, "v1", ago=5, id=1)]
        echo = recognise(Reported(PUSH, D1, "v1"), writes, now=NOW)
        assert echo is not None
        assert echo.write == 1

    def test_window_is_ten_minutes(self) -> None:
        """The echo window covers a notification endpoint down for ten minutes."""
        assert ECHO_WINDOW_SECONDS == 600.0


class TestRecogniseAll:
    def test_one_write_echoes_one_event(self) -> None:
        """The same push reported twice against one write: the first is the echo, the second
        (a user pushing the same image again) is new."""
        event = Reported(PUSH, D1, "v1")
        first, second = recognise_all([event, event], [write(PUSH, D1, "v1")], now=NOW)
        assert first is not None
        assert second is None

    def test_manifest_delete_and_its_tags(self) -> None:
        """A manifest delete's digest event and its tags' events are all echoes of one write."""
        events = [
            Reported(DELETE, D1, None),
            Reported(DELETE, None, "v1"),
            Reported(DELETE, None, "v2"),
        ]
        found = recognise_all(events, [write(DELETE, D1, None)], now=NOW)
        assert [e is not None for e in found] == [True, True, True]
        assert [e.write for e in found if e is not None] == [1, None, None]


@pytest.mark.parametrize(
    ("agent", "ours"),
    [
        (None, False),
        ("", False),
        ("replicator", False),
        (REPLICA_USER_AGENT, True),
        (f"{REPLICA_USER_AGENT}/2", True),
        (f"docker/24 {REPLICA_USER_AGENT}", False),
    ],
)
def test_replica_agent(agent: str | None, ours: bool) -> None:
    """Only a user agent starting with our replication clients' is taken for ours."""
    assert is_replica_agent(agent) is ours
