"""``cryptoflow snapshots``: the lake's history (DuckLake snapshots: id, time, author, message, what changed), and the
helpers that ``cryptoflow query --snapshot/--as-of`` and ``cryptoflow restore`` share to find a snapshot.

Every lake commit is a snapshot; its id is the N of ``--snapshot N``. ``--as-of TIME`` is the latest snapshot committed
at or before TIME, as DuckLake's own ``AT (TIMESTAMP => ...)`` picks it.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from cryptoflow_dagster.cli.errors import CliError

BAD_INPUT_EXIT = 2
FORMATS = ("table", "csv", "json")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "snapshots",
        help="list the lake's snapshots (its history), to find N for query --snapshot / restore",
        description="List the lake's snapshots, newest first: id, commit time (UTC), author and message (set by "
        "`cryptoflow restore`), and what changed. With --table, only the snapshots that changed that table, with the "
        "rows each added and removed. The id is the N of `cryptoflow query --snapshot N` and `cryptoflow restore "
        "--snapshot N`.",
        epilog="example: cryptoflow snapshots --table silver.trades --limit 10",
    )
    parser.add_argument("--table", metavar="SCHEMA.TABLE", help="only snapshots that changed this table")
    parser.add_argument("--limit", "-n", type=int, default=20, help="show at most this many (default 20; 0: all)")
    parser.add_argument("--format", "-f", choices=FORMATS, default="table", help="output format (default: table)")
    parser.set_defaults(run=run)


@dataclass(frozen=True)
class Snapshot:
    id: int
    time: datetime  # UTC
    author: str | None
    message: str | None
    changes: dict[str, list[str]]
    extra_info: str | None = None  # a restore's: {"restored_to_snapshot": N, "tables": [...]}

    def describe(self) -> str:
        return f"snapshot {self.id} ({_utc(self.time)})"


def list_snapshots(con: Any) -> list[Snapshot]:
    """Every snapshot the catalog keeps (expired ones are gone), oldest first."""
    from cryptoflow_dagster import lake

    rows = con.execute(
        f"SELECT snapshot_id, snapshot_time, author, commit_message, changes, commit_extra_info "
        f"FROM {lake.CATALOG}.snapshots() ORDER BY snapshot_id"
    ).fetchall()
    return [Snapshot(r[0], r[1].astimezone(timezone.utc), r[2], r[3], dict(r[4] or {}), r[5]) for r in rows]


def table_names(con: Any) -> dict[str, str]:
    """Table id (as the snapshots' changes spell it) -> ``schema.table``, from the catalog's metadata tables (the
    DuckLake spec's ``ducklake_table`` and ``ducklake_schema``); latest name of each id. Empty if they cannot be read."""
    from cryptoflow_dagster import lake

    meta = f"__ducklake_metadata_{lake.CATALOG}"
    try:
        rows = con.execute(
            f"""SELECT t.table_id, s.schema_name || '.' || t.table_name
                FROM {meta}.ducklake_table t JOIN {meta}.ducklake_schema s USING (schema_id)
                ORDER BY t.begin_snapshot"""
        ).fetchall()
    except Exception:  # an internal catalog we could not read: ids stay ids
        return {}
    return {str(table_id): name for table_id, name in rows}


def touched_tables(snapshot: Snapshot, names: dict[str, str]) -> set[str]:
    """The ``schema.table`` names a snapshot's changes mention (ids translated; created/dropped ones come as names)."""
    touched = set()
    for key, values in snapshot.changes.items():
        if key.startswith(("schemas_", "views_")):
            continue
        touched.update(names.get(v, v) for v in values or ())
    return touched


_CHANGE_WORDS = {
    "tables_inserted_into": "inserted", "inlined_insert": "inserted",
    "tables_deleted_from": "deleted", "inlined_delete": "deleted",
    "tables_created": "created", "tables_dropped": "dropped", "tables_altered": "altered",
}


def describe_changes(snapshot: Snapshot, names: dict[str, str]) -> str:
    parts: dict[str, list[str]] = {}
    for key, values in snapshot.changes.items():
        word = _CHANGE_WORDS.get(key, key.replace("_", " "))
        for v in values or ():
            name = names.get(v, v)
            if name not in parts.setdefault(word, []):
                parts[word].append(name)
    return "; ".join(
        f"{word}: {', '.join(sorted(tables)) if len(tables) <= MAX_NAMED else f'{len(tables)} tables'}"
        for word, tables in parts.items()
    )


MAX_NAMED = 6  # a change to more tables than this (the lake's creation) is a count, not a list


def parse_time(text: str) -> datetime:
    """An ISO 8601 time (``2025-09-01``, ``2025-09-01T12:00``, ``2025-09-01 12:00:00+09:00``, ``...Z``); UTC when it
    names no zone."""
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise CliError(
            f"--as-of {text!r} is not an ISO 8601 time (e.g. 2025-09-01T12:00:00Z or '2025-09-01 21:00+09:00')",
            BAD_INPUT_EXIT,
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def resolve(snapshots: list[Snapshot], *, snapshot: int | None = None, as_of: str | None = None) -> Snapshot:
    """The kept snapshot that ``--snapshot N`` or ``--as-of TIME`` names, or a clear error (exit 2)."""
    if not snapshots:
        raise CliError("the lake has no snapshots", BAD_INPUT_EXIT)
    first, latest = snapshots[0], snapshots[-1]
    kept = f"the lake keeps snapshots {first.id} ({_utc(first.time)}) to {latest.id} ({_utc(latest.time)})"
    if snapshot is not None:
        by_id = {s.id: s for s in snapshots}
        if snapshot in by_id:
            return by_id[snapshot]
        if 0 <= snapshot < latest.id:
            raise CliError(f"snapshot {snapshot} was expired (DuckLake no longer holds it); {kept}", BAD_INPUT_EXIT)
        raise CliError(f"snapshot {snapshot} does not exist; {kept}", BAD_INPUT_EXIT)
    if as_of is None:
        raise ValueError("resolve needs snapshot or as_of")
    when = parse_time(as_of)
    if when < first.time:
        oldest = "first" if first.id == 0 else "oldest kept"
        raise CliError(f"--as-of {_utc(when)} is before the lake's {oldest} snapshot; {kept}", BAD_INPUT_EXIT)
    now = datetime.now(timezone.utc)
    if when > now:
        raise CliError(f"--as-of {_utc(when)} is in the future (now: {_utc(now)}); {kept}", BAD_INPUT_EXIT)
    chosen = max((s for s in snapshots if s.time <= when), key=lambda s: s.id)
    later = [s for s in snapshots if s.id > chosen.id]
    if later and later[0].id != chosen.id + 1:
        # Snapshots between the two were expired: one of them may be the state at that time, which is gone.
        raise CliError(
            f"the lake at {_utc(when)} may be in {_ids(chosen.id + 1, later[0].id - 1)}, expired since; {kept}",
            BAD_INPUT_EXIT,
        )
    return chosen


def run(args: argparse.Namespace) -> int:
    import duckdb

    from cryptoflow_dagster.cli.query import open_lake, write_result
    from cryptoflow_dagster.lake.sql import is_table_name

    if args.table is not None and not is_table_name(args.table):
        raise CliError(f"not a lake table: {args.table!r} (schema.table in bronze, silver, gold or ops)", BAD_INPUT_EXIT)
    with open_lake() as con:
        try:
            snapshots = list_snapshots(con)
            names = table_names(con)
            if args.table is not None:
                snapshots = [s for s in snapshots if args.table in touched_tables(s, names)]
            snapshots = snapshots[::-1][: args.limit or None]
            columns = ["snapshot", "time_utc", "author", "message", "changes"]
            rows = [[s.id, s.time, s.author, s.message, describe_changes(s, names)] for s in snapshots]
            if args.table is not None:
                counts = _row_changes(con, args.table, snapshots)
                columns[2:2] = ["rows_added", "rows_removed"]
                for row, s in zip(rows, snapshots):
                    row[2:2] = list(counts.get(s.id, (None, None)))
        except duckdb.Error as exc:
            raise CliError(f"cannot read the lake's history: {exc}") from None
    write_result(columns, [tuple(r) for r in rows], args.format, sys.stdout)
    return 0


def _row_changes(con: Any, table: str, snapshots: list[Snapshot]) -> dict[int, tuple[int, int]]:
    """Rows each snapshot added to and removed from ``table`` (DuckLake's change feed; an update counts both ways)."""
    from cryptoflow_dagster import lake

    if not snapshots:
        return {}
    schema, name = table.split(".")
    try:
        rows = con.execute(
            "SELECT snapshot_id, "
            "count(*) FILTER (WHERE change_type IN ('insert', 'update_postimage')), "
            "count(*) FILTER (WHERE change_type IN ('delete', 'update_preimage')) "
            "FROM ducklake_table_changes(?, ?, ?, ?, ?) GROUP BY snapshot_id",
            [lake.CATALOG, schema, name, min(s.id for s in snapshots), max(s.id for s in snapshots)],
        ).fetchall()
    except Exception:  # e.g. a table whose columns changed in the range: the list still shows the snapshots
        return {}
    counts = {s.id: (0, 0) for s in snapshots}
    counts.update({r[0]: (r[1], r[2]) for r in rows})
    return counts


def _ids(first: int, last: int) -> str:
    return f"snapshot {first}" if first == last else f"snapshots {first}-{last}"


def _utc(when: datetime) -> str:
    return when.astimezone(timezone.utc).isoformat(sep=" ", timespec="microseconds").replace("+00:00", "Z")
