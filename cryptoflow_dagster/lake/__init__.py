"""The one way into the lake: DuckDB with the DuckLake catalog ``lake`` attached.

Everything that reads or writes the lake (Dagster assets, the CLI, tests, benchmarks) goes through this package, so
that extensions, the catalog, retries and transactions are handled in one place. Import the package
(``from cryptoflow_dagster import lake``) and use what it exports; the modules say where each part lives:

- ``extensions``: extensions load from the ``duckdb-extension-*`` packages into a project-owned folder (no download);
- ``databases``: one DuckDB database per process and lake, the catalog (SQLite in WAL mode, or Postgres) attached,
  sessions and connections as its cursors (ADR 0014); the lake at an earlier snapshot (``snapshot=``,
  :func:`snapshot_attached`);
- ``transactions``: :func:`write` runs a unit of work in one transaction, the writers of a SQLite catalog taking turns
  across processes, and retries it when the commit lost a race: a failed attempt leaves nothing behind;
  :func:`writer_turn` holds the turn over several transactions;
- ``schema``: the DDL of the tables Python writes, :func:`ensure_schema`, the data file options;
- ``tables``: :func:`insert` and :func:`replace_rows` for Polars/Arrow frames;
- ``errors``: :class:`LakeError`, :func:`is_retryable`; ``sql``: the catalog's name, literals.
"""

from cryptoflow_dagster.lake.databases import connect, session, snapshot_attached
from cryptoflow_dagster.lake.errors import LakeError, is_retryable
from cryptoflow_dagster.lake.extensions import DUCKDB_VERSION, install_extensions, needed_extensions, packaged_extension
from cryptoflow_dagster.lake.schema import DATA_FILE_OPTIONS, SCHEMAS, TABLES, ensure_schema
from cryptoflow_dagster.lake.sql import CATALOG
from cryptoflow_dagster.lake.tables import insert, replace_rows
from cryptoflow_dagster.lake.transactions import write, writer_turn

__all__ = [
    "CATALOG",
    "DATA_FILE_OPTIONS",
    "DUCKDB_VERSION",
    "SCHEMAS",
    "TABLES",
    "LakeError",
    "connect",
    "ensure_schema",
    "insert",
    "install_extensions",
    "is_retryable",
    "needed_extensions",
    "packaged_extension",
    "replace_rows",
    "session",
    "snapshot_attached",
    "write",
    "writer_turn",
]
