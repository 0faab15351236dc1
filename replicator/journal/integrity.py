"""The start-up integrity check of a journal that already holds a schema: what a damaged or
half-restored database looks like, refused (exit 74) before the daemon takes a message it could
not record.

- Every table and column of the schema is there. A journal that has a schema version but lost a
  table (a partial restore, a DROP by hand) would otherwise get it created again, empty: every
  job it held forgotten without a word.
- PostgreSQL: no index is invalid (a failed `CREATE INDEX CONCURRENTLY` or `REINDEX` leaves one
  the planner skips and the unique key no longer holds), and, when the `amcheck` extension is
  installed in the database, `bt_index_check` of every B-tree index of the journal's tables
  (each index page's structure, O(index size); amcheck is contrib and needs CREATE EXTENSION, so
  it is used when present, never installed here).
(SQLite's own check, `PRAGMA quick_check`, is in schema.py: it runs before anything is read.)
"""

from __future__ import annotations

from typing import NoReturn

from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import DBAPIError
from sqlmodel import SQLModel

from replicator.errors import JournalError

# What a refusal says to do, after naming the damage.
_WHAT_TO_DO = (
    "restore it from a backup, or point [journal] url at an empty database (then run "
    "`replicator backfill` to journal what the destinations miss)"
)
# Indexes of the journal's tables that PostgreSQL marks invalid.
_INVALID_INDEXES = text(
    "SELECT index.relname FROM pg_index AS i "
    "JOIN pg_class AS index ON index.oid = i.indexrelid "
    "JOIN pg_class AS owner ON owner.oid = i.indrelid "
    "WHERE NOT i.indisvalid AND owner.relname = ANY(:tables) "
    "AND owner.relnamespace = to_regnamespace(current_schema())::oid "
    "ORDER BY index.relname"
)
_HAS_AMCHECK = text("SELECT 1 FROM pg_extension WHERE extname = 'amcheck'")
# The B-tree indexes of the journal's tables, for amcheck.
_BTREE_INDEXES = text(
    "SELECT index.relname FROM pg_index AS i "
    "JOIN pg_class AS index ON index.oid = i.indexrelid "
    "JOIN pg_class AS owner ON owner.oid = i.indrelid "
    "JOIN pg_am AS am ON am.oid = index.relam "
    "WHERE am.amname = 'btree' AND owner.relname = ANY(:tables) "
    "AND owner.relnamespace = to_regnamespace(current_schema())::oid "
    "ORDER BY index.relname"
)


def check_integrity(engine: Engine, redacted_url: str) -> None:
    """Refuse (JournalError, permanent) a journal missing a table or a column of its schema, or,
    on PostgreSQL, with an invalid or (amcheck) damaged index."""
    tables = SQLModel.metadata.tables
    found = inspect(engine)
    present = set(found.get_table_names())
    missing = sorted(set(tables) - present)
    if missing:
        _refuse(redacted_url, f"table(s) {', '.join(missing)} missing")
    for name, table in sorted(tables.items()):
        columns = {column["name"] for column in found.get_columns(name)}
        lost = [column.name for column in table.columns if column.name not in columns]
        if lost:
            _refuse(redacted_url, f"table {name} lacks column(s) {', '.join(lost)}")
    if engine.dialect.name == "postgresql":
        _check_indexes(engine, redacted_url, sorted(tables))


def _check_indexes(engine: Engine, redacted_url: str, tables: list[str]) -> None:
    with engine.connect() as connection:
        invalid = [str(row[0]) for row in connection.execute(_INVALID_INDEXES, {"tables": tables})]
        if invalid:
            _refuse(redacted_url, f"invalid index(es) {', '.join(invalid)}")
        if connection.execute(_HAS_AMCHECK).first() is None:
            return
        for row in connection.execute(_BTREE_INDEXES, {"tables": tables}).all():
            try:
                connection.execute(
                    text("SELECT bt_index_check(CAST(:name AS regclass))"), {"name": row[0]}
                )
            except DBAPIError as exc:
                _refuse(
                    redacted_url, f"amcheck bt_index_check({row[0]}): {str(exc).splitlines()[0]}"
                )


def _refuse(redacted_url: str, damage: str) -> NoReturn:
    raise JournalError(
        f"journal {redacted_url} is damaged ({damage}): {_WHAT_TO_DO}", temporary=False
    )
