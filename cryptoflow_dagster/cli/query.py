"""``cryptoflow query "SQL"``: read-only SQL on the lake, printed as a table, CSV or JSON.

Two walls keep it read-only: only SELECT/EXPLAIN statements are accepted, and the lake is attached READ_ONLY anyway.
A reader never blocks the platform's writers (DuckLake snapshots), so this is safe while ingestion runs.

Time travel: ``--snapshot N`` / ``--as-of TIME`` attach the lake at that snapshot (DuckLake ``SNAPSHOT_VERSION``), so
every table reference of the person's SQL reads it, with no rewrite of the SQL.
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
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--snapshot", type=int, metavar="N",
                      help="read the lake as it was at snapshot N (`cryptoflow snapshots` lists them)")
    when.add_argument("--as-of", metavar="TIME",
                      help="read the lake as it was at TIME: ISO 8601 (2025-09-01T12:00:00Z, '2025-09-01 21:00+09:00'; "
                      "UTC when no zone is given), i.e. the latest snapshot committed at or before it")
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

    with open_lake(snapshot=args.snapshot, as_of=args.as_of) as con:
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
def open_lake(snapshot: int | None = None, as_of: str | None = None) -> Iterator[Any]:
    """A read-only session; a lake that cannot be opened is an environment problem (exit 1), not an SQL error.

    With ``snapshot`` or ``as_of`` the session is the lake at that snapshot (named on stderr), found among the snapshots
    the live lake keeps; one that does not exist, was expired or lies outside the history is a clear error (exit 2).
    """
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
    if snapshot is not None or as_of is not None:
        from cryptoflow_dagster.cli.snapshots import list_snapshots, resolve

        try:
            chosen = resolve(list_snapshots(con), snapshot=snapshot, as_of=as_of)
        finally:
            con.close()
        try:
            con = lake.connect(settings, read_only=True, snapshot=chosen.id)
        except duckdb.Error as exc:  # expired between the two looks
            raise CliError(f"cannot open the lake at {chosen.describe()}: {exc}", 2) from None
        print(f"cryptoflow: reading the lake at {chosen.describe()}", file=sys.stderr, flush=True)
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
        write_table(columns, rows, out)


# Rows per rich Table when a result is printed in pieces: rich renders ~0.5 ms a row of 8 columns and holds every cell
# of a table in memory, so a long result streams out a piece at a time with the column widths of the whole result.
CHUNK_ROWS = 500
SLOW_TABLE_ROWS = 20_000


def write_table(columns: list[str], rows: list[tuple], out: TextIO) -> None:
    """An aligned table drawn by rich: numbers right-aligned, NULL spelled out (dim on a terminal), a row count last.

    On a terminal rich picks colours and the terminal's width (cells fold, never cut, when the table is wider). Anywhere
    else (a pipe, a file, a test) there are no escape codes and the table is as wide as its widest values: nothing folds.
    """
    from rich.cells import cell_len

    count = f"({len(rows)} row{'s' if len(rows) != 1 else ''})"
    if not columns:
        out.write(count + "\n")
        return
    if len(rows) > SLOW_TABLE_ROWS:
        print(f"cryptoflow query: drawing {len(rows)} rows as a table takes a while; --format csv writes them at once",
              file=sys.stderr, flush=True)
    cells = [[_text(v) for v in row] for row in rows]
    numeric = [
        any(_is_number(row[i]) for row in rows) and all(_is_number(row[i]) for row in rows if row[i] is not None)
        for i in range(len(columns))
    ]
    widths = [
        max([_text_width(name, cell_len)] + [_text_width(row[i], cell_len) for row in cells])
        for i, name in enumerate(columns)
    ]
    natural = sum(w + 2 for w in widths) + len(widths) - 1  # one space of padding each side, one rule between columns
    console = _console(out, natural)
    if natural <= console.width:
        # Every piece gets the whole result's widths, so the pieces line up as one table.
        for start in range(0, max(len(cells), 1), CHUNK_ROWS):
            console.print(_table(columns, cells[start:start + CHUNK_ROWS], numeric, widths, header=start == 0))
    else:
        # Wider than the terminal: rich shares the width out and folds the widest columns (one table, measured by rich).
        console.print(_table(columns, cells, numeric, None, header=True))
    console.print(count, highlight=False)


def _table(columns: list[str], cells: list[list[str]], numeric: list[bool], widths: list[int] | None, *, header: bool):
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SQUARE, show_edge=False, show_header=header, header_style="bold")
    for i, name in enumerate(columns):
        table.add_column(
            Text(name), justify="right" if numeric[i] else "left", overflow="fold",
            width=None if widths is None else widths[i],
        )
    for row in cells:
        table.add_row(*(Text("NULL", style="dim italic") if v is None else Text(v) for v in row))
    return table


def _console(out: TextIO, natural_width: int):
    """A terminal gets rich's own detection (colours, width, NO_COLOR); anything else plain text, wide enough."""
    from rich.console import Console

    common = {"markup": False, "highlight": False, "emoji": False}
    isatty = getattr(out, "isatty", None)
    if isatty is not None and isatty():
        return Console(file=out, **common)
    return Console(file=out, force_terminal=False, color_system=None, width=natural_width + 8, **common)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)


def _text_width(value: str | None, cell_len: Any) -> int:
    return 4 if value is None else max((cell_len(line) for line in value.splitlines()), default=0)


def _text(value: Any) -> str | None:
    """A cell's text; None stays None (drawn as NULL, set apart from the string 'NULL')."""
    if value is None:
        return None
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
