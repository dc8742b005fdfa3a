"""Table metadata of the lake's assets, in Dagster's own keys (``TableMetadataSet``).

- Definition metadata (:func:`table_metadata`): ``dagster/table_name`` (``lake.silver.trades``) and
  ``dagster/column_schema``, a ``TableSchema`` parsed from the lake's DDL text (``lake.TABLES``) when the code location
  loads: no lake is opened for it, and the UI shows the columns before anything was materialized.
- Materialization metadata (:func:`row_counts`, :func:`add_row_counts`): ``dagster/row_count``, the table's rows after
  the write, and for a daily-partitioned asset ``dagster/partition_row_count``, the rows of each day it wrote, counted
  in the lake after the commit. The whole-table count is answered from DuckLake's file statistics (~10 ms); a day's
  count scans that day's ``day`` column (~40 ms per 10 M rows).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

import dagster as dg
import duckdb

from cryptoflow_dagster import lake
from cryptoflow_dagster.lake.sql import is_table_name

ROW_COUNT = "dagster/row_count"
PARTITION_ROW_COUNT = "dagster/partition_row_count"
TABLE_NAME = "dagster/table_name"
COLUMN_SCHEMA = "dagster/column_schema"

# Tables with one row per (exchange, market) as of now, not per day: a day asset over them reports the table's rows.
SNAPSHOT_TABLES = frozenset({"gold.market_stats_24h"})


def table_of(key: dg.AssetKey) -> str:
    """The lake table an asset key names (the project's convention: ``["silver", "trades"]`` is ``silver.trades``)."""
    return ".".join(key.path)


def _split_columns(ddl: str) -> list[str]:
    """The column definitions of a ``CREATE TABLE (...)`` body: commas inside parentheses do not split."""
    text = re.sub(r"--[^\n]*", "", ddl)
    parts, depth, current = [], 0, []
    for ch in text:
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        depth += ch == "("
        depth -= ch == ")"
        current.append(ch)
    parts.append("".join(current))
    return [" ".join(p.split()) for p in parts if p.strip()]


# DDL spellings -> the name DuckDB describes the column with (duckdb_columns(), DESCRIBE), as dbt's marts show theirs.
_CANONICAL_TYPES = {
    "TIMESTAMPTZ": "TIMESTAMP WITH TIME ZONE", "INT": "INTEGER", "INT4": "INTEGER", "INT8": "BIGINT",
    "TEXT": "VARCHAR", "STRING": "VARCHAR", "FLOAT8": "DOUBLE", "BOOL": "BOOLEAN", "BYTEA": "BLOB",
}


@functools.cache
def column_schema(table: str) -> dg.TableSchema:
    """The columns of a Python-written lake table, from its DDL in ``lake.TABLES`` (name, type as DuckDB names it,
    NOT NULL); tests/test_dagster_native.py holds it equal to what the lake describes."""
    columns = []
    for definition in _split_columns(lake.TABLES[table]):
        name, _, rest = definition.partition(" ")
        not_null = re.search(r"\bNOT\s+NULL\b", rest, re.IGNORECASE) is not None
        type_ = re.sub(r"\bNOT\s+NULL\b", "", rest, flags=re.IGNORECASE).strip()
        type_ = _CANONICAL_TYPES.get(type_.upper(), type_)
        columns.append(dg.TableColumn(name, type_, constraints=dg.TableColumnConstraints(nullable=not not_null)))
    return dg.TableSchema(columns=columns)


def table_metadata(table: str) -> dict[str, Any]:
    """Definition metadata of the asset that is ``table``: its fully qualified name and column schema."""
    return {TABLE_NAME: f"{lake.CATALOG}.{table}", COLUMN_SCHEMA: column_schema(table)}


def spec_metadata(key: dg.AssetKey) -> dict[str, Any]:
    return table_metadata(table_of(key))


def _checked(table: str) -> str:
    # formatted into SQL below: only a contract table name (schema.table) gets there
    if not is_table_name(table):
        raise ValueError(f"unknown lake table {table!r}")
    return table


def table_rows(con: duckdb.DuckDBPyConnection, table: str) -> int:
    return con.execute(f"SELECT count(*) FROM {_checked(table)}").fetchone()[0]


def day_rows(con: duckdb.DuckDBPyConnection, table: str, days: Iterable[date]) -> dict[date, int]:
    """Rows per day of ``table`` (its ``day`` column) for ``days``; a day without rows is 0."""
    days = sorted(set(days))
    if not days:
        return {}
    counts = dict(con.execute(
        f"SELECT day, count(*) FROM {_checked(table)} WHERE day BETWEEN ? AND ? GROUP BY day", [days[0], days[-1]]
    ).fetchall())
    return {d: counts.get(d, 0) for d in days}


def row_counts(con: duckdb.DuckDBPyConnection, table: str, days: Iterable[date] | None = None
               ) -> tuple[int, dict[date, int]]:
    """(the table's rows, rows per day of ``days``) as the lake holds them now. For a snapshot table the per-day
    figure is the table's rows (it has no day)."""
    total = table_rows(con, table)
    if days is None:
        return total, {}
    if table in SNAPSHOT_TABLES:
        return total, {d: total for d in days}
    return total, day_rows(con, table, days)


def row_count_metadata(total: int, partition_rows: int | None = None) -> dict[str, int]:
    metadata = {ROW_COUNT: total}
    if partition_rows is not None:
        metadata[PARTITION_ROW_COUNT] = partition_rows
    return metadata


def add_row_counts(context: dg.AssetExecutionContext, con: duckdb.DuckDBPyConnection, key: dg.AssetKey,
                   days: Iterable[date] | None = None) -> Mapping[date, int]:
    """Count ``key``'s table after the run's writes and put the counts on its materializations: the table's rows on
    every one, each day's rows on that day's partition. Returns the rows per day."""
    total, per_day = row_counts(con, table_of(key), days)
    if not per_day:
        context.add_asset_metadata(row_count_metadata(total), asset_key=key)
    for day, n in per_day.items():
        context.add_asset_metadata(row_count_metadata(total, n), asset_key=key, partition_key=day.isoformat())
    return per_day
