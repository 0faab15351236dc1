"""The journal's indexes for a fleet's table of finished jobs (bench/journal_bench.py measured
the queries that read the whole table without them)."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, inspect, text

from replicator.journal.claimers import open_journal
from replicator.journal.gauges import COUNTS
from replicator.journal.models import SCHEMA_VERSION
from replicator.journal.queries import image_statement
from tests.support.old_journals import job_values, write_old_journal

pytestmark = pytest.mark.integration

FLEET_INDEXES = {
    "ix_jobs_tag": ["repository", "tag"],
    "ix_jobs_state_destination": ["state", "destination"],
}
DIGEST = "sha256:" + "a" * 64


def _indexes(url: str) -> dict[str, list[str]]:
    engine = create_engine(url)
    try:
        return {
            index["name"]: [str(column) for column in index["column_names"]]
            for index in inspect(engine).get_indexes("jobs")
            if index["name"] is not None
        }
    finally:
        engine.dispose()


async def test_new_journal_has_the_fleet_indexes(journal_url: str) -> None:
    """A journal created now indexes jobs by repository and tag, and by state and destination."""
    async with await open_journal(journal_url):
        pass
    found = _indexes(journal_url)
    for name, columns in FLEET_INDEXES.items():
        assert found.get(name) == columns, found


async def test_older_journal_is_migrated_to_the_fleet_indexes(journal_url: str) -> None:
    """A journal of schema version 4 is migrated on open to the current version, its jobs kept,
    with both indexes made."""
    write_old_journal(journal_url, 4, [job_values(DIGEST, "v1", "usw2")])
    async with await open_journal(journal_url) as journal:
        found = await journal.status("use1", "app", tag="v1")
        assert [job.digest for job in found] == [DIGEST]
    indexes = _indexes(journal_url)
    for name, columns in FLEET_INDEXES.items():
        assert indexes.get(name) == columns, indexes
    engine = create_engine(journal_url)
    with engine.connect() as connection:
        version = connection.execute(
            text("SELECT value FROM meta WHERE key = 'schema_version'")
        ).scalar_one()
    engine.dispose()
    assert version == str(SCHEMA_VERSION)


@pytest.mark.parametrize("journal_url", ["sqlite"], indirect=True)
async def test_sqlite_answers_status_and_counts_from_the_indexes(journal_url: str) -> None:
    """SQLite's plans: `status` of a tag searches ix_jobs_tag, and the metrics' counts read the
    covering ix_jobs_state_destination instead of every row of the table."""
    async with await open_journal(journal_url):
        pass
    engine = create_engine(journal_url)
    status = image_statement(narrowed=("source", "tag"), newest=True)
    params = {"repository": "app", "source": "use1", "tag": "v1"}
    with engine.connect() as connection:
        compiled = status.compile(engine)
        bound = compiled.construct_params(params)
        positional = tuple(bound[name] for name in compiled.positiontup or ())
        plan = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", positional).all()
        assert any("ix_jobs_tag" in str(row) for row in plan), plan
        counts = connection.execute(text(f"EXPLAIN QUERY PLAN {COUNTS.compile(engine)}")).all()
        assert any("COVERING INDEX ix_jobs_state_destination" in str(row) for row in counts), counts
    engine.dispose()
