"""``cryptoflow query "SQL"``: read-only SQL on the lake, printed as a table, CSV or JSON.

Two walls keep it read-only: only SELECT/EXPLAIN statements are accepted, and the lake is attached READ_ONLY anyway.
A reader never blocks the platform's writers (DuckLake snapshots), so this is safe while ingestion runs.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime, time as dtime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from cryptoflow_dagster.cli.errors import CliError

SQL_ERROR_EXIT = 2
FORMATS = ("table", "csv", "json")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "query",
        help="run read-only SQL on the lake",
        description="Run read-only SQL against the DuckLake lake (schemas bronze, silver, gold, ops: write "
        "`silver.trades`, not `lake.silver.trades`). Only SELECT-like statements run; anything that writes is "
        "refused. Exit code 2 on an SQL error.",
        epilog='example: cryptoflow query "SELECT market, count(*) FROM silver.trades GROUP BY 1" --format csv',
    )
    parser.add_argument("sql", help="the SQL to run (one or more SELECT statements; each result is printed)")
    parser.add_argument("--format", "-f", choices=FORMATS, default="table", help="output format (default: table)")
    parser.set_defaults(run=run)


# Statement types that cannot change anything. DESCRIBE, SHOW, SUMMARIZE and PRAGMA parse as SELECT.
READ_STATEMENTS = ("SELECT", "EXPLAIN")


def check_read_only(statement_types: Sequence[str]) -> None:
    refused = [t for t in statement_types if t not in READ_STATEMENTS]
    if refused:
        raise CliError(
            f"query is read-only: {', '.join(sorted(set(refused)))} statements are refused "
            "(only SELECT, EXPLAIN, DESCRIBE, SHOW, SUMMARIZE run)",
            SQL_ERROR_EXIT,
        )
    if not statement_types:
        raise CliError("no SQL statement given", SQL_ERROR_EXIT)


def run(args: argparse.Namespace) -> int:
    import duckdb

    with _open_lake() as con:
        try:
            statements = con.extract_statements(args.sql)
            check_read_only([s.type.name for s in statements])
            for i, statement in enumerate(statements):
                columns, rows = _fetch(con, statement.query)
                if i:
                    sys.stdout.write("\n")
                write_result(columns, rows, args.format, sys.stdout)
        except duckdb.Error as exc:
            raise CliError(f"SQL error: {exc}", SQL_ERROR_EXIT) from None
    return 0


@contextmanager
def _open_lake() -> Iterator[Any]:
    """A read-only session; a lake that cannot be opened is an environment problem (exit 1), not an SQL error."""
    import duckdb

    from cryptoflow_dagster import lake
    from cryptoflow_core.settings import load_settings

    settings = load_settings()
    catalog = settings.catalog_uri.removeprefix("ducklake:sqlite:")
    if settings.catalog_uri.startswith("ducklake:sqlite:") and not Path(catalog).exists():
        raise CliError(f"no lake at {catalog} yet: run `cryptoflow demo` (or any ingestion) first, or set CRYPTOFLOW_HOME")
    try:
        con = lake.connect(settings, read_only=True)
    except (duckdb.Error, lake.LakeError) as exc:
        raise CliError(f"cannot open the lake {settings.catalog_uri}: {exc}") from None
    try:
        yield con
    finally:
        con.close()


def _fetch(con: Any, sql: str, attempts: int = 5) -> tuple[list[str], list[tuple]]:
    """Run one read; a catalog momentarily locked by a committing writer is retried, it is not the reader's error."""
    from cryptoflow_dagster import lake

    for attempt in range(1, attempts + 1):
        try:
            cursor = con.execute(sql)
            columns = [d[0] for d in cursor.description] if cursor.description else []
            return columns, cursor.fetchall()
        except Exception as exc:
            if not lake.is_retryable(exc) or attempt == attempts:
                raise
            time.sleep(0.05 * attempt)
    raise AssertionError("unreachable")


def write_result(columns: list[str], rows: list[tuple], fmt: str, out: TextIO) -> None:
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[_csv_value(v) for v in row] for row in rows])
    elif fmt == "json":
        json.dump([dict(zip(columns, map(_json_value, row))) for row in rows], out, indent=None)
        out.write("\n")
    else:
        out.write(render_table(columns, rows))


def render_table(columns: list[str], rows: list[tuple]) -> str:
    """A plain aligned text table: numbers right-aligned, NULL spelled out, a row count at the end."""
    cells = [[_text(v) for v in row] for row in rows]
    numeric = [all(isinstance(row[i], (int, float, Decimal)) for row in rows if row[i] is not None) for i in range(len(columns))]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        return " | ".join(v.rjust(w) if numeric[i] else v.ljust(w) for i, (v, w) in enumerate(zip(values, widths))).rstrip()

    lines = [line(columns), "-+-".join("-" * w for w in widths)] + [line(r) for r in cells]
    lines.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(lines) + "\n"


def _text(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    return str(value)


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (datetime, date, dtime)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
