"""Frames into lake tables: :func:`insert` (inside the caller's transaction) and :func:`replace_rows` (delete and insert
in one retried transaction: how a partition is rebuilt)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb

from cryptoflow_dagster.lake.schema import TABLES
from cryptoflow_dagster.lake.sql import CATALOG, is_table_name
from cryptoflow_dagster.lake.transactions import write


def replace_rows(
    con: duckdb.DuckDBPyConnection,
    table: str,
    where_sql: str,
    params: Sequence[Any],
    rows: Any,
) -> int:
    """Delete the rows matching ``where_sql`` and insert ``rows`` (a Polars/Arrow frame) in one retried transaction.

    This is how a partition is rebuilt: running it twice leaves the same table. ``where_sql`` holds only placeholders
    for outside values (``params``); ``table`` must be a contract table name. Returns the number of rows inserted.
    """
    if table not in TABLES and not is_table_name(table):
        raise ValueError(f"unknown lake table {table!r}")

    def work(c: duckdb.DuckDBPyConnection) -> int:
        c.execute(f"DELETE FROM {CATALOG}.{table} WHERE {where_sql}", list(params))
        return insert(c, table, rows)

    return write(con, work)


def insert(con: duckdb.DuckDBPyConnection, table: str, rows: Any) -> int:
    """Insert a Polars/Arrow frame into a lake table by column name (inside the caller's transaction)."""
    if len(rows) == 0:
        return 0
    con.register("_cryptoflow_rows", rows)
    try:
        columns = ", ".join('"' + c.replace('"', '""') + '"' for c in rows.columns)  # quoted identifiers, even odd ones
        con.execute(f"INSERT INTO {CATALOG}.{table} ({columns}) SELECT {columns} FROM _cryptoflow_rows")
    finally:
        con.unregister("_cryptoflow_rows")
    return len(rows)
