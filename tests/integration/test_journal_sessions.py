"""The MQTT sessions a daemon made, remembered in the journal on SQLite and PostgreSQL: what a
restarted daemon reads to tell a session the broker lost from a first start."""

from __future__ import annotations

import asyncio

import pytest

from replicator.journal.claimers import open_journal

pytestmark = pytest.mark.integration

BROKER = "127.0.0.1:1883"
# Several daemons with one client id (a misconfigured fleet) recording at the same moment.
RACERS = 4


async def test_a_session_made_is_remembered_per_client_and_broker(journal_url: str) -> None:
    """Unknown until recorded, then known to another process of the journal; another broker
    or client id is not; a second record changes nothing; a client id longer than the meta
    key's 64 characters is kept apart from its prefix."""
    long_id = "replicator-" + "x" * 200
    async with await open_journal(journal_url) as first, await open_journal(journal_url) as later:
        assert not await first.mqtt_session_made("replicator", BROKER)
        await first.remember_mqtt_session("replicator", BROKER)
        await first.remember_mqtt_session("replicator", BROKER)
        assert await later.mqtt_session_made("replicator", BROKER)
        assert not await later.mqtt_session_made("replicator", "broker.example:8883")
        assert not await later.mqtt_session_made("replicator-2", BROKER)
        await first.remember_mqtt_session(long_id, BROKER)
        assert await later.mqtt_session_made(long_id, BROKER)
        assert not await later.mqtt_session_made(long_id[:-1], BROKER)


async def test_processes_recording_at_once_all_succeed(journal_url: str) -> None:
    """Four processes recording the same session at the same moment: none fails, it is known."""
    journals = [await open_journal(journal_url) for _ in range(RACERS)]
    try:
        await asyncio.gather(*(j.remember_mqtt_session("replicator", BROKER) for j in journals))
        assert await journals[0].mqtt_session_made("replicator", BROKER)
    finally:
        for journal in journals:
            await journal.close()
