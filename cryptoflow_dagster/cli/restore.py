"""``cryptoflow restore``: put tables (or the whole lake) back as they were at an earlier snapshot.

One lake transaction (``lake.write``: the writers' turn on a SQLite catalog, retried if it loses a race on Postgres)
replaces each table's current rows with its rows at the snapshot, read through the lake attached read-only at that
snapshot beside the live one (``lake.snapshot_attached``). The restore is itself a new snapshot, author
``cryptoflow restore`` and a message naming the tables and the snapshot, so it shows in ``cryptoflow snapshots`` and can
be undone by restoring the snapshot before it. Tables the history shows unchanged since the snapshot are left alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Any

from cryptoflow_dagster.cli.errors import CliError
from cryptoflow_dagster.cli.snapshots import BAD_INPUT_EXIT, Snapshot, list_snapshots, resolve, table_names

AUTHOR = "cryptoflow restore"
SNAPSHOT_ALIAS = "lake_at_snapshot"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "restore",
        help="restore lake tables (or the whole lake) to an earlier snapshot",
        description="Replace the rows of lake tables with their rows at an earlier snapshot, in one lake transaction: "
        "the restore is a new snapshot of its own (author 'cryptoflow restore'), so it shows in `cryptoflow "
        "snapshots` and restoring the snapshot before it undoes it. Writers keep running: anything the stream commits "
        "after the restore stays. Rows the restore removes from silver.trades stay recorded in ops.ingested_files "
        "unless that is restored too: restore the tables the stream writes together (--all), or stop the platform "
        "first. Exit 2 on bad input (nothing changes).",
        epilog="examples: cryptoflow restore --table silver.trades --snapshot 41 --dry-run; "
        "cryptoflow restore --all --as-of '2025-09-01 12:00' --yes",
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--table", "-t", action="append", metavar="SCHEMA.TABLE",
                       help="a table to restore (bronze, silver, gold or ops); repeat for several")
    which.add_argument("--all", action="store_true",
                       help="every table of bronze, silver, gold and ops (tables created since the snapshot are emptied)")
    when = parser.add_mutually_exclusive_group(required=True)
    when.add_argument("--snapshot", type=int, metavar="N", help="the snapshot id (`cryptoflow snapshots` lists them)")
    when.add_argument("--as-of", metavar="TIME",
                      help="the latest snapshot at or before TIME (ISO 8601; UTC when no zone is given)")
    parser.add_argument("--dry-run", action="store_true", help="print what would change (rows now and then) and stop")
    parser.add_argument("--yes", "-y", action="store_true",
                        help="do not ask for confirmation (required when stdin is not a terminal)")
    parser.set_defaults(run=run)


@dataclass
class Step:
    table: str
    rows_now: int | None  # None: the table no longer exists
    rows_then: int | None  # None: the table did not exist at the snapshot
    changed: bool  # the history shows a change to it since the snapshot
    columns: list[str]  # restored by name: the columns the table has both now and then

    @property
    def action(self) -> str:
        if self.rows_now is None:
            return "skip: dropped since, cannot be restored"
        if not self.changed:
            return "none: as at the snapshot"
        if self.rows_then is None:
            return "empty: created since"
        return "restore"


def run(args: argparse.Namespace) -> int:
    import duckdb

    from cryptoflow_dagster import lake
    from cryptoflow_dagster.lake.sql import is_table_name

    tables = list(dict.fromkeys(args.table or []))
    bad = [t for t in tables if not is_table_name(t)]
    if bad:
        raise CliError(
            f"not a lake table: {', '.join(map(repr, bad))}; restore takes tables as schema.table in bronze, silver, "
            "gold or ops (`cryptoflow query \"SHOW ALL TABLES\"` lists them)", BAD_INPUT_EXIT,
        )
    settings = _settings()
    try:
        with lake.session(settings) as con:
            chosen = resolve(list_snapshots(con), snapshot=args.snapshot, as_of=args.as_of)
            with lake.snapshot_attached(con, chosen.id, SNAPSHOT_ALIAS, settings):
                steps = _plan(con, chosen, tables)
                _print_plan(steps, chosen, dry_run=args.dry_run)
                todo = [s for s in steps if s.action in ("restore", "empty: created since")]
                if args.dry_run:
                    return 0
                if not todo:
                    print(f"cryptoflow restore: nothing to do, the tables are as at {chosen.describe()}", file=sys.stderr)
                    return 0
                _confirm(args.yes, todo, chosen)
                restored = lake.write(con, lambda c: _restore(c, chosen, todo))
                new = con.execute(f"SELECT * FROM ducklake_last_committed_snapshot({_lit(lake.CATALOG)})").fetchone()
    except duckdb.Error as exc:
        raise CliError(f"restore failed, nothing was changed: {exc}") from None
    if not restored:
        print(f"cryptoflow restore: nothing to do, the tables are as at {chosen.describe()}", file=sys.stderr)
        return 0
    print(f"restored {', '.join(restored)} to {chosen.describe()}: new snapshot {new[0] if new else '?'}")
    return 0


def _settings() -> Any:
    from pathlib import Path

    from cryptoflow_core.settings import load_settings

    settings = load_settings()
    catalog = settings.catalog_uri.removeprefix("ducklake:sqlite:")
    if settings.catalog_uri.startswith("ducklake:sqlite:") and not Path(catalog).exists():
        raise CliError(f"no lake at {catalog} yet: nothing to restore (or set CRYPTOFLOW_HOME)")
    return settings


def _lake_tables(con: Any, database: str) -> set[str]:
    from cryptoflow_dagster import lake
    from cryptoflow_dagster.lake.sql import is_table_name

    rows = con.execute(
        "SELECT schema_name || '.' || table_name FROM duckdb_tables() WHERE database_name = ? AND schema_name IN ?",
        [database, list(lake.SCHEMAS)],
    ).fetchall()
    return {r[0] for r in rows if is_table_name(r[0])}  # only names that are safe to format into SQL


def _columns(con: Any, database: str, table: str) -> list[str]:
    schema, name = table.split(".")
    return [r[0] for r in con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE database_name = ? AND schema_name = ? AND table_name = ? "
        "ORDER BY column_index", [database, schema, name]).fetchall()]


def _plan(con: Any, chosen: Snapshot, tables: list[str]) -> list[Step]:
    """What the restore would do to each table; ``tables`` empty: every table of the four schemas (``--all``)."""
    from cryptoflow_dagster import lake

    now, then = _lake_tables(con, lake.CATALOG), _lake_tables(con, SNAPSHOT_ALIAS)
    if not tables:  # --all: tables created since are emptied, tables dropped since are reported and skipped
        tables = sorted(now | then)
    else:
        for table in tables:
            if table not in now and table not in then:
                raise CliError(f"no table {table} in the lake, now or at {chosen.describe()}", BAD_INPUT_EXIT)
            if table not in then:
                raise CliError(f"{table} did not exist at {chosen.describe()}: restoring it would empty it "
                               "(--all empties the tables created since the snapshot)", BAD_INPUT_EXIT)
            if table not in now:
                raise CliError(f"{table} was dropped since {chosen.describe()}: restore cannot recreate a table",
                               BAD_INPUT_EXIT)
    changed = _changed_since(con, chosen)
    steps = []
    for table in tables:
        columns = []
        if table in now and table in then:
            then_columns = set(_columns(con, SNAPSHOT_ALIAS, table))
            columns = [c for c in _columns(con, lake.CATALOG, table) if c in then_columns]
        steps.append(Step(
            table,
            _count(con, lake.CATALOG, table) if table in now else None,
            _count(con, SNAPSHOT_ALIAS, table) if table in then else None,
            changed(table),
            columns,
        ))
    return steps


def _changed_since(con: Any, chosen: Snapshot):
    """``changed(table)``: may the table differ from its state at ``chosen``? Yes if a later snapshot touched it,
    unless the last one that did was a restore of it to ``chosen`` (so restoring twice is a no-op). A table id the
    catalog does not name counts as a change to every table (safe: the restore runs)."""
    from cryptoflow_dagster.cli.snapshots import touched_tables

    names = table_names(con)
    as_then: dict[str, bool] = {}
    unknown = False
    for s in list_snapshots(con):
        if s.id <= chosen.id:
            continue
        restored = _restored_by(s, chosen.id)
        for t in touched_tables(s, names):
            if "." not in t:
                unknown = True
            as_then[t] = t in restored
    return lambda table: unknown or not as_then.get(table, True)


def _restored_by(snapshot: Snapshot, target: int) -> set[str]:
    """The tables ``snapshot`` restored to snapshot ``target`` (from the commit's extra info), if it is a restore."""
    if snapshot.author != AUTHOR or not snapshot.extra_info:
        return set()
    try:
        info = json.loads(snapshot.extra_info)
    except ValueError:
        return set()
    if not isinstance(info, dict) or info.get("restored_to_snapshot") != target:
        return set()
    return {t for t in info.get("tables") or () if isinstance(t, str)}


def _count(con: Any, database: str, table: str) -> int:
    return con.execute(f"SELECT count(*) FROM {database}.{table}").fetchone()[0]


def _print_plan(steps: list[Step], chosen: Snapshot, *, dry_run: bool) -> None:
    from cryptoflow_dagster.cli.query import write_result

    print(f"{'dry run: ' if dry_run else ''}restore to {chosen.describe()}:")
    write_result(
        ["table", "rows_now", f"rows_at_snapshot_{chosen.id}", "action"],
        [(s.table, s.rows_now, 0 if s.rows_then is None else s.rows_then, s.action) for s in steps],
        "table", sys.stdout,
    )
    sys.stdout.flush()


def _confirm(yes: bool, todo: list[Step], chosen: Snapshot) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise CliError("a restore replaces rows: pass --yes to run it without a terminal to confirm on "
                       "(--dry-run shows what it would change)", BAD_INPUT_EXIT)
    answer = input(f"Replace the rows of {len(todo)} table(s) with their rows at {chosen.describe()}? [y/N] ")
    if answer.strip().lower() not in ("y", "yes"):
        raise CliError("not confirmed: nothing was changed")


def _restore(con: Any, chosen: Snapshot, todo: list[Step]) -> list[str]:
    """The transaction's work (re-runnable: lake.write may run it again after a lost race)."""
    from cryptoflow_dagster import lake

    changed = _changed_since(con, chosen)  # again, inside the transaction: a writer may have committed since the plan
    todo = [s for s in todo if changed(s.table)]
    if not todo:
        return []
    names = [s.table for s in todo]
    message = (f"restore {', '.join(names)} to snapshot {chosen.id} ({chosen.time.isoformat()})" if len(names) <= 3
               else f"restore {len(names)} tables to snapshot {chosen.id} ({chosen.time.isoformat()})")
    info = json.dumps({"restored_to_snapshot": chosen.id, "snapshot_time": chosen.time.isoformat(), "tables": names})
    con.execute(f"CALL {lake.CATALOG}.set_commit_message(?, ?, extra_info => ?)", [AUTHOR, message, info])
    for step in todo:
        # step.table is a contract name (is_table_name, and listed by the catalog); columns are quoted identifiers
        con.execute(f"DELETE FROM {lake.CATALOG}.{step.table}")
        if step.rows_then is not None and step.columns:
            columns = ", ".join('"' + c.replace('"', '""') + '"' for c in step.columns)
            con.execute(f"INSERT INTO {lake.CATALOG}.{step.table} BY NAME "
                        f"SELECT {columns} FROM {SNAPSHOT_ALIAS}.{step.table}")
    return names


def _lit(value: str) -> str:
    from cryptoflow_dagster.lake.sql import literal

    return literal(value)
