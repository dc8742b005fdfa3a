"""Lake upkeep: DuckLake's maintenance, one table and one bounded batch per writers' turn (docs/decisions/0017).

The stream commits about once a second, each commit a snapshot and, above DuckLake's inlining limit (10 rows), a new
Parquet file per table: 3 minutes of ``make demo`` made 310 snapshots and 458 live files of 7.6 KB. The steps here
keep that in check; each returns what it did in an :class:`UpkeepReport`:

- :func:`flush_inlined`: rows DuckLake inlined into the catalog go to Parquet (``ducklake_flush_inlined_data``);
- :func:`rewrite_deletes`: files with at least a threshold share of deleted rows, and small files with any, are
  rewritten without them (``ducklake_rewrite_data_files``), the table's inlined rows flushed just before in the
  same writers' turn;
- :func:`merge_small_files`: small files are merged (``ducklake_merge_adjacent_files``); merged files keep each row's
  snapshot, so time travel is unaffected;
- :func:`expire_snapshots`: snapshots older than the retention go (``ducklake_expire_snapshots``), and older than the
  thin-after setting all but the last of each minute, after the commit times ``cryptoflow slo`` needs are copied to
  ``ops.ingest_commits`` in the same transaction;
- :func:`delete_old_files`: files no snapshot uses any more are deleted once the cleanup delay has passed
  (``ducklake_cleanup_old_files``); :func:`delete_orphaned_files`: files the catalog never knew (a writer died before
  its commit), as old (``ducklake_delete_orphaned_files``);
- :func:`catalog_upkeep`: SQLite incremental ``VACUUM`` + ``ANALYZE`` (in a process of its own: see there) or
  Postgres ``VACUUM ANALYZE``;
- :func:`lake_health`: live files, delete files and bytes per table, snapshots, catalog size.

**The writers' turn.** Every step that commits runs inside :func:`lake.write <cryptoflow_dagster.lake.write>`: on a
SQLite catalog writers take turns across processes, so a step's transaction is time the stream waits. No step runs one
big transaction: each table is its own turn, and a merge turn takes one group of files whose size is capped
(DuckLake's ``target_file_size`` for this session) so that it holds about ``files_per_turn`` files; the number adapts to
the time the last turn took (aiming at :data:`TURN_TARGET_S`). Between turns the step pauses :data:`PAUSE_S` so a
waiting writer gets the turn.

**DuckLake 1.5.5 on a SQLite catalog compares ``older_than`` by day** (``ducklake_expire_snapshots``,
``ducklake_cleanup_old_files``): any time on a UTC day counts as older than every time of that day (tested in
tests/test_lake_upkeep.py; the Postgres catalog compares exactly). So snapshots are expired by id
(``versions => [...]``, chosen here by their time), and old files are cleaned up with a bound moved back to the end of
the previous UTC day on a SQLite catalog: never too early, at most a day late.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

import duckdb

from cryptoflow_core.settings import Settings
from cryptoflow_dagster import lake
from cryptoflow_dagster.slo import INGESTED

log = logging.getLogger(__name__)

T = TypeVar("T")

METADATA = f"__ducklake_metadata_{lake.CATALOG}"  # the catalog database DuckLake attaches beside the lake

# A merge turn starts with this many small files and adapts (x0.5 .. x2 per turn) to take about TURN_TARGET_S:
# 2,000 files of 4.7 KB merged in 0.65 s on a quiet machine and 2.1 s on a loaded one (ADR 0017).
FILES_PER_TURN = 200
MIN_FILES_PER_TURN, MAX_FILES_PER_TURN = 20, 4000
TURN_TARGET_S = 0.4
# Pause between two turns of one step, so that a writer waiting for the turn gets it (flock is not a queue: the
# process that just released would often win the next race).
PAUSE_S = 0.2
# Files under this size are the stream's small files (7.6 KB on average in the demo): merged first, by their number.
SMALL_FILE_BYTES = 256 * 1024
# Snapshots expired per turn: 2,000 took 0.12 s on a quiet machine, 500 took 0.45-0.94 s at load 10 on 2 cores.
EXPIRE_BATCH = 250
# Snapshots older than CRYPTOFLOW_LAKE_SNAPSHOT_THIN_AFTER keep the last of each bucket this long: the stream commits
# about once a second, and every snapshot the catalog holds makes each commit a little slower (ADR 0017 addendum).
THIN_TO = timedelta(minutes=1)
# Never more turns than this in one step of one pass: the next pass goes on where this one stopped.
MAX_TURNS_PER_TABLE = 200

_UNITS = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
_INLINED_TABLE = re.compile(r"ducklake_inlined_data_\d+_\d+")


def parse_size(text: str) -> int:
    """``'16MB'`` -> 16,000,000 (DuckDB's units: KB = 1000, KiB = 1024)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B)\s*", text, re.IGNORECASE)
    if match is None:
        raise ValueError(f"not a size: {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


@dataclass
class UpkeepReport:
    """What one pass did; every field is a number, so Dagster can plot each (``ops/lake_health``)."""

    rows_flushed: int = 0  # inlined rows written to Parquet
    files_merged: int = 0  # small files merge_adjacent_files replaced
    files_rewritten: int = 0  # delete-heavy files rewrite_data_files replaced
    files_written: int = 0  # files the merges and rewrites wrote
    rewrites_skipped: int = 0  # tables whose rewrite DuckLake refused while they held inlined rows (see rewrite_deletes)
    snapshots_expired: int = 0
    commits_recorded: int = 0  # ingest commits copied to ops.ingest_commits before their snapshots expired
    files_deleted: int = 0  # files no snapshot used any more, deleted
    orphans_deleted: int = 0
    bytes_freed: int = 0
    catalog_bytes_freed: int = 0
    turns: int = 0  # writers' turns taken
    longest_turn_s: float = 0.0  # the longest of them, held from BEGIN to COMMIT
    seconds: float = 0.0

    def add(self, other: UpkeepReport) -> None:
        for name, value in asdict(other).items():
            if name == "longest_turn_s":
                self.longest_turn_s = max(self.longest_turn_s, value)
            else:
                setattr(self, name, getattr(self, name) + value)

    def figures(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


@dataclass
class _Turns:
    """Runs units of work in the writers' turn, one at a time with a pause between, and times how long each held it."""

    report: UpkeepReport
    pause_s: float = PAUSE_S
    last_end: float = field(default=0.0)
    last_held_s: float = 0.0

    def run(self, con: duckdb.DuckDBPyConnection, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        return self.run_together(con, [work])[0]

    def run_together(
        self, con: duckdb.DuckDBPyConnection, works: Sequence[Callable[[duckdb.DuckDBPyConnection], T]]
    ) -> list[T]:
        """Each unit of work in a transaction of its own, all in one writers' turn: no other writer commits between
        them (on a Postgres catalog, where writers take no turns, they may)."""
        wait = self.last_end + self.pause_s - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        with lake.writer_turn(con):
            started = time.monotonic()
            results = [lake.write(con, work) for work in works]
            self.last_end = time.monotonic()
        self.last_held_s = self.last_end - started
        self.report.turns += 1
        self.report.longest_turn_s = max(self.report.longest_turn_s, self.last_held_s)
        return results


@dataclass(frozen=True)
class Table:
    table_id: int
    schema: str
    name: str

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


def tables(con: duckdb.DuckDBPyConnection) -> list[Table]:
    """The lake's current tables (the contract's and dbt's), from DuckLake's catalog."""
    rows = con.execute(
        f"""SELECT t.table_id, s.schema_name, t.table_name
            FROM {METADATA}.ducklake_table t JOIN {METADATA}.ducklake_schema s USING (schema_id)
            WHERE t.end_snapshot IS NULL AND s.end_snapshot IS NULL ORDER BY s.schema_name, t.table_name"""
    ).fetchall()
    return [Table(*row) for row in rows]


def catalog_type(con: duckdb.DuckDBPyConnection) -> str:
    """``sqlite`` or ``postgres``."""
    return con.execute("SELECT catalog_type FROM ducklake_settings(?)", [lake.CATALOG]).fetchone()[0]


# --- flush, rewrite, merge ----------------------------------------------------------------------------------------


def inlined_rows(con: duckdb.DuckDBPyConnection) -> dict[int, int]:
    """Rows each table holds inlined in the catalog (deleted ones included: they stay for time travel), by table id."""
    counts: dict[int, int] = {}
    for table_id, name in con.execute(
        f"SELECT table_id, table_name FROM {METADATA}.ducklake_inlined_data_tables"
    ).fetchall():
        if not _INLINED_TABLE.fullmatch(name):  # formatted into SQL below: only DuckLake's own names
            continue
        n = con.execute(f"SELECT count(*) FROM {METADATA}.{name}").fetchone()[0]
        counts[table_id] = counts.get(table_id, 0) + n
    return counts


def flush_inlined(con: duckdb.DuckDBPyConnection, only: Iterable[Table] | None = None) -> UpkeepReport:
    """Write each table's inlined rows to a Parquet file, a table per turn (tables with none are skipped: a flush of
    nothing still costs ~15 ms a table, and of the whole lake at once 0.8-2.4 s)."""
    report = UpkeepReport()
    turns = _Turns(report)
    pending = inlined_rows(con)
    for table in only if only is not None else tables(con):
        if pending.get(table.table_id, 0) == 0:
            continue
        rows = turns.run(con, lambda c, t=table: c.execute(
            "CALL ducklake_flush_inlined_data(?, schema_name => ?, table_name => ?)", [lake.CATALOG, t.schema, t.name]
        ).fetchall())
        report.rows_flushed += sum(r[2] for r in rows)
    return report


def files_to_rewrite(
    con: duckdb.DuckDBPyConnection, threshold: float, small_bytes: int
) -> dict[int, tuple[int, int]]:
    """Tables with live files to rewrite: table id -> (such files, how many of them are small). A file is rewritten when at least ``threshold`` of
    its rows are deleted, or when it is small (under ``small_bytes``) and has any delete: DuckLake never merges a file
    with deletes, so without the rewrite the small files the stream's gold tables leave (a commit replaces the bars of
    its last, partial minute) would stay unmerged, about one per flush, for ever.

    A delete is either a delete file (``ducklake_delete_file``) or, for a few rows, inlined into the catalog
    (``ducklake_inlined_delete_<table id>``: one row per deleted row, kept while a snapshot can see it)."""
    live = con.execute(
        f"""SELECT f.table_id, f.data_file_id, f.record_count, f.file_size_bytes, coalesce(sum(d.delete_count), 0)
            FROM {METADATA}.ducklake_data_file f LEFT JOIN {METADATA}.ducklake_delete_file d
              ON d.data_file_id = f.data_file_id AND d.end_snapshot IS NULL
            WHERE f.end_snapshot IS NULL AND f.record_count > 0 GROUP BY ALL"""
    ).fetchall()
    inlined: dict[int, int] = {}
    for table_id in {r[0] for r in live}:
        try:  # the table exists once the table has had an inlined delete
            inlined.update(con.execute(
                f"SELECT file_id, count(*) FROM {METADATA}.ducklake_inlined_delete_{int(table_id)} GROUP BY file_id"
            ).fetchall())
        except duckdb.CatalogException:
            continue
    chosen: dict[int, tuple[int, int]] = {}
    for table_id, file_id, records, size, deleted in live:
        deleted += inlined.get(file_id, 0)
        if deleted and (deleted >= threshold * records or size < small_bytes):
            files, small = chosen.get(table_id, (0, 0))
            chosen[table_id] = (files + 1, small + (size < small_bytes))
    return chosen


def rewrite_deletes(
    con: duckdb.DuckDBPyConnection, threshold: float, target_bytes: int, only: Iterable[Table] | None = None
) -> UpkeepReport:
    """Rewrite the files :func:`files_to_rewrite` picks, a table per turn: first its inlined rows and deletes are
    flushed, then its files rewritten, both in one writers' turn.

    DuckLake 1.5.5 refuses to commit a rewrite of a table that holds inlined rows ("Failed to read inlined-data
    aggregates": ``isnan`` called on a VARCHAR column), which the stream's tables do after nearly every commit, and a
    flush in the rewrite's own transaction is refused too ("either make changes OR perform compaction"). With the
    flush just before, in the same turn, no writer can inline rows in between (SQLite catalog). On a Postgres catalog
    one may: the table's rewrite is then skipped for this pass (counted), and the pass goes on to merge and expire.
    The rewrite call's threshold is 0 where a small file has deletes (DuckLake takes one threshold per table; files
    with no delete are never rewritten), ``threshold`` elsewhere."""
    report = UpkeepReport()
    turns = _Turns(report)
    chosen = files_to_rewrite(con, threshold, target_bytes // 2)
    _set_target(con, target_bytes)
    for table in only if only is not None else tables(con):
        files, small_files = chosen.get(table.table_id, (0, 0))
        if not files:
            continue
        table_threshold = 0.0 if small_files else threshold
        try:
            flushed, rewritten = turns.run_together(con, [
                lambda c, t=table: c.execute(
                    "CALL ducklake_flush_inlined_data(?, schema_name => ?, table_name => ?)",
                    [lake.CATALOG, t.schema, t.name],
                ).fetchall(),
                lambda c, t=table: c.execute(
                    "CALL ducklake_rewrite_data_files(?, ?, schema => ?, delete_threshold => ?)",
                    [lake.CATALOG, t.name, t.schema, table_threshold],
                ).fetchall(),
            ])
        except duckdb.Error as exc:
            if "inlined" not in str(exc):
                raise
            log.warning("rewrite of %s skipped, DuckLake refused it while the table holds inlined rows: %s", table, exc)
            report.rewrites_skipped += 1
            continue
        report.rows_flushed += sum(r[2] for r in flushed)
        report.files_rewritten += sum(r[2] for r in rewritten)
        report.files_written += sum(r[3] for r in rewritten)
    return report


def merge_small_files(
    con: duckdb.DuckDBPyConnection,
    target_bytes: int,
    only: Iterable[Table] | None = None,
    files_per_turn: int = FILES_PER_TURN,
    max_turns_per_table: int = MAX_TURNS_PER_TABLE,
) -> UpkeepReport:
    """Merge each table's small files, one merged file per turn, in two tiers.

    DuckLake groups adjacent files until their sizes add up to its target file size (this session's
    ``ducklake_target_file_size``), and ``max_compacted_files => 1`` makes one group per call; ``max_file_size`` leaves
    bigger files out. A merged file must come out bigger than that filter, or the next call would merge it again with
    a few more small files, over and over (a merged file holds its inputs in about half their bytes):

    1. files under :data:`SMALL_FILE_BYTES` (the stream's micro-batch files), in groups of ``files_per_turn`` times
       their median size (at least 4 x the filter): the turn is bounded by its number of files, which is what a merge
       costs (~0.3 ms a file); ``files_per_turn`` adapts to the time each turn held the writers (:data:`TURN_TARGET_S`);
    2. files under half the target size (what tier 1 made), in groups of the target size: bounded by bytes.
    """
    report = UpkeepReport()
    turns = _Turns(report)
    small = min(SMALL_FILE_BYTES, target_bytes // 8)
    for table in only if only is not None else tables(con):
        for below, tier in ((small, 1), (target_bytes // 2, 2)):
            for _ in range(max_turns_per_table):
                count, median = con.execute(
                    f"""SELECT count(*), coalesce(median(file_size_bytes), 0) FROM {METADATA}.ducklake_data_file
                        WHERE table_id = ? AND end_snapshot IS NULL AND file_size_bytes < ?""",
                    [table.table_id, below],
                ).fetchone()
                if count < 2:
                    break
                group = target_bytes if tier == 2 else int(min(target_bytes, max(4 * small, files_per_turn * median)))
                _set_target(con, group)
                rows = turns.run(con, lambda c, t=table, below=below: c.execute(
                    "CALL ducklake_merge_adjacent_files(?, ?, schema => ?, max_compacted_files => 1, "
                    "max_file_size => ?)", [lake.CATALOG, t.name, t.schema, below],
                ).fetchall())
                merged = sum(r[2] for r in rows)
                report.files_merged += merged
                report.files_written += sum(r[3] for r in rows)
                if merged < 2:  # nothing (more) that DuckLake considers adjacent
                    break
                if tier == 1:
                    files_per_turn = _adapt(files_per_turn, turns.last_held_s)
    _set_target(con, target_bytes)
    return report


def _adapt(files_per_turn: int, held_s: float) -> int:
    factor = min(2.0, max(0.5, TURN_TARGET_S / max(held_s, 1e-3)))
    return int(min(MAX_FILES_PER_TURN, max(MIN_FILES_PER_TURN, files_per_turn * factor)))


def _set_target(con: duckdb.DuckDBPyConnection, target_bytes: int) -> None:
    # A session setting: this cursor only (other sessions of the process keep DuckLake's default for their inserts).
    con.execute(f"SET SESSION ducklake_target_file_size = '{int(target_bytes)}B'")


# --- snapshots and files ------------------------------------------------------------------------------------------


def expirable_snapshots(
    con: duckdb.DuckDBPyConnection, older_than: datetime | None, thin_before: datetime | None = None,
    thin_to: timedelta = THIN_TO,
) -> list[tuple[int, datetime, bool]]:
    """The snapshots to expire, oldest first: (id, commit time, whether it inserted into ops.ingested_files).

    Those committed before ``older_than`` (None: none), and with ``thin_before``, those committed before it that are not the last of
    their ``thin_to`` bucket (e.g. the minute). Never the latest: DuckLake keeps it anyway. One read of every snapshot,
    outside any turn (~0.1 ms a snapshot)."""
    files_table = con.execute(
        f"""SELECT CAST(t.table_id AS VARCHAR) FROM {METADATA}.ducklake_table t
            JOIN {METADATA}.ducklake_schema s USING (schema_id)
            WHERE s.schema_name = 'ops' AND t.table_name = 'ingested_files' AND t.end_snapshot IS NULL"""
    ).fetchone()
    return con.execute(
        f"""SELECT snapshot_id, snapshot_time, ingested FROM (
                SELECT snapshot_id, snapshot_time, coalesce({INGESTED}, false) AS ingested,
                    snapshot_id = max(snapshot_id) OVER (PARTITION BY time_bucket($thin_to, snapshot_time))
                        AS last_of_bucket
                FROM ducklake_snapshots($catalog))
            WHERE (snapshot_time < $older_than OR (snapshot_time < $thin_before AND NOT last_of_bucket))
              AND snapshot_id < (SELECT max(snapshot_id) FROM ducklake_snapshots($catalog))
            ORDER BY snapshot_id""",
        {"catalog": lake.CATALOG, "older_than": older_than, "thin_before": thin_before, "thin_to": thin_to,
         "files_table": files_table[0] if files_table else ""},
    ).fetchall()


def expire_snapshots(
    con: duckdb.DuckDBPyConnection, older_than: datetime | None, batch: int = EXPIRE_BATCH,
    thin_before: datetime | None = None, thin_to: timedelta = THIN_TO,
) -> UpkeepReport:
    """Expire the snapshots committed before ``older_than``, and thin those committed before ``thin_before`` to the last
    of each ``thin_to`` bucket (:func:`expirable_snapshots`); ``batch`` ids per turn, oldest first.

    Each turn first copies the commit times of the expiring snapshots that inserted into ops.ingested_files to
    ops.ingest_commits (``cryptoflow slo`` reads both), in the same transaction: a commit time is never lost nor
    recorded twice. Time travel to an expired snapshot then fails with "No snapshot found".
    """
    report = UpkeepReport()
    turns = _Turns(report)
    snapshots = expirable_snapshots(con, older_than, thin_before, thin_to)
    for start in range(0, len(snapshots), batch):
        chunk = snapshots[start:start + batch]
        ingest = [(i, t) for i, t, ingested in chunk if ingested]

        def work(c: duckdb.DuckDBPyConnection, chunk=chunk, ingest=ingest) -> tuple[int, int]:
            recorded = 0
            if ingest:
                recorded = c.execute(
                    f"""INSERT INTO {lake.CATALOG}.ops.ingest_commits
                        SELECT id, t, now() FROM (SELECT unnest($ids) AS id, unnest($times) AS t)
                        WHERE id NOT IN (SELECT snapshot_id FROM {lake.CATALOG}.ops.ingest_commits
                                         WHERE snapshot_id BETWEEN $lo AND $hi)""",
                    {"ids": [i for i, _ in ingest], "times": [t for _, t in ingest],
                     "lo": ingest[0][0], "hi": ingest[-1][0]},
                ).fetchone()[0]
            expired = c.execute(
                "SELECT count(*) FROM ducklake_expire_snapshots(?, versions => ?)",
                [lake.CATALOG, [s[0] for s in chunk]],
            ).fetchone()[0]
            return recorded, expired

        recorded, expired = turns.run(con, work)
        report.commits_recorded += recorded
        report.snapshots_expired += expired
    return report


def cleanup_bound(kind: str, cutoff: datetime) -> datetime:
    """The ``older_than`` to give DuckLake's file cleanup for "scheduled before ``cutoff``".

    On a SQLite catalog DuckLake 1.5.5 treats every time of a UTC day as older than all of that day (see the module
    docstring): the bound moves back to the end of the day before ``cutoff``'s, so no file goes before ``cutoff``.
    """
    if kind != "sqlite":
        return cutoff
    cutoff = cutoff.astimezone(timezone.utc)
    day_start = cutoff.replace(hour=0, minute=0, second=0, microsecond=0)
    return min(cutoff, day_start - timedelta(microseconds=1))


def delete_old_files(con: duckdb.DuckDBPyConnection, older_than: datetime) -> UpkeepReport:
    """Delete the files DuckLake scheduled for deletion (no snapshot uses them) before ``older_than``, in one turn
    (the catalog's list is updated with the deletions: 2,000 local files took 0.09 s)."""
    report = UpkeepReport()
    bound = cleanup_bound(catalog_type(con), older_than)
    sizes = _sizes(con, [r[0] for r in con.execute(
        "SELECT path FROM ducklake_cleanup_old_files(?, dry_run => true, older_than => ?)", [lake.CATALOG, bound]
    ).fetchall()])
    if not sizes:
        return report
    deleted = _Turns(report).run(con, lambda c: [r[0] for r in c.execute(
        "SELECT path FROM ducklake_cleanup_old_files(?, older_than => ?)", [lake.CATALOG, bound]
    ).fetchall()])
    report.files_deleted = len(deleted)
    report.bytes_freed = sum(sizes.get(p, 0) for p in deleted)
    return report


def delete_orphaned_files(con: duckdb.DuckDBPyConnection, older_than: datetime) -> UpkeepReport:
    """Delete data files under the lake's data path that the catalog does not know, last modified before
    ``older_than`` (DuckLake compares the files' own times here, exactly). It writes nothing to the catalog, so it
    takes no writers' turn; its listing of the data path is the slow part on a lake of many files."""
    report = UpkeepReport()
    sizes = _sizes(con, [r[0] for r in con.execute(
        "SELECT path FROM ducklake_delete_orphaned_files(?, dry_run => true, older_than => ?)",
        [lake.CATALOG, older_than],
    ).fetchall()])
    if not sizes:
        return report
    deleted = [r[0] for r in con.execute(
        "SELECT path FROM ducklake_delete_orphaned_files(?, older_than => ?)", [lake.CATALOG, older_than]
    ).fetchall()]
    report.orphans_deleted = len(deleted)
    report.bytes_freed = sum(sizes.get(p, 0) for p in deleted)
    return report


def _sizes(con: duckdb.DuckDBPyConnection, paths: list[str]) -> dict[str, int]:
    """Sizes of files on the lake's file system (local or S3), read without their contents."""
    if not paths:
        return {}
    try:
        return dict(con.execute("SELECT filename, size FROM read_blob(?)", [paths]).fetchall())
    except duckdb.Error as exc:  # a file gone meanwhile: the figure is a report, never a reason to stop
        log.info("could not read the sizes of %d files: %s", len(paths), exc)
        return {}


# --- the catalog --------------------------------------------------------------------------------------------------


def catalog_bytes(con: duckdb.DuckDBPyConnection) -> int:
    """The catalog's size: the SQLite file and its write-ahead log, or the Postgres database's; -1 if unknown."""
    path = con.execute("SELECT path FROM duckdb_databases() WHERE database_name = ?", [lake.CATALOG]).fetchone()[0]
    if path.startswith("sqlite:"):
        file = path[len("sqlite:"):]
        return sum(os.path.getsize(f) for f in (file, file + "-wal") if os.path.exists(f))
    try:
        return int(con.execute(
            "SELECT * FROM postgres_query(?, 'SELECT pg_database_size(current_database())')", [METADATA]
        ).fetchone()[0])
    except duckdb.Error as exc:
        log.info("catalog size unknown: %s", exc)
        return -1


# VACUUM cannot run inside a transaction, which is all DuckDB's SQLite scanner offers, and this process must not open
# the catalog file with another SQLite library: closing it would drop the POSIX locks DuckDB's SQLite holds on the same
# file (lake/databases.py, _use_wal). So a short-lived process of its own runs each statement, inside our turn.
_SQLITE_SCRIPT = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
db.executescript(sys.argv[2])
db.execute("PRAGMA busy_timeout = 200")  # a reader in the way: the log is truncated another time
db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
db.close()
"""
# A full VACUUM copies the live catalog (~20 ms a MB measured): done once, to switch the file to incremental
# vacuuming, and only while the live catalog is small enough for one turn; then free pages go back to the file system
# this many at a time (16 MB of 4 KB pages: 0.33 s).
FULL_VACUUM_MAX_BYTES = 32 * 10**6
INCREMENTAL_VACUUM_PAGES = 4096
MAX_VACUUM_TURNS = 100


def _sqlite_pragma(con: duckdb.DuckDBPyConnection, name: str) -> int:
    return int(con.execute(f"SELECT * FROM sqlite_query(?, 'PRAGMA {name}')", [METADATA]).fetchone()[0])


def catalog_upkeep(con: duckdb.DuckDBPyConnection, settings: Settings) -> UpkeepReport:
    """The catalog database's own upkeep.

    SQLite, each statement in a writers' turn of its own: the first time (and only while the live catalog is under
    :data:`FULL_VACUUM_MAX_BYTES`) ``auto_vacuum = INCREMENTAL`` and a ``VACUUM``; after that
    ``incremental_vacuum`` gives the pages expired snapshots freed back to the file system, a bounded number per turn;
    then ``ANALYZE``, and the write-ahead log truncated. Postgres: ``VACUUM (ANALYZE)`` of the catalog's database on a
    connection of its own (autocommit: VACUUM cannot run in a transaction); Postgres writers do not take turns.
    """
    report = UpkeepReport()
    before = catalog_bytes(con)
    path = con.execute("SELECT path FROM duckdb_databases() WHERE database_name = ?", [lake.CATALOG]).fetchone()[0]
    if path.startswith("sqlite:"):
        file = path[len("sqlite:"):]
        turns = _Turns(report)

        def run(script: str) -> None:
            turns.run(con, lambda _c: subprocess.run(
                [sys.executable, "-c", _SQLITE_SCRIPT, file, script], check=True, capture_output=True, text=True,
                timeout=600))

        page_size = _sqlite_pragma(con, "page_size")
        if _sqlite_pragma(con, "auto_vacuum") != 2:  # 2: incremental
            live = (_sqlite_pragma(con, "page_count") - _sqlite_pragma(con, "freelist_count")) * page_size
            if live <= FULL_VACUUM_MAX_BYTES:
                run("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;")
            else:
                log.warning("lake catalog: %.0f MB live is too much for one VACUUM while the stream writes; it runs "
                            "once expiry has shrunk the catalog below %.0f MB", live / 1e6, FULL_VACUUM_MAX_BYTES / 1e6)
        else:
            for _ in range(MAX_VACUUM_TURNS):
                if _sqlite_pragma(con, "freelist_count") == 0:
                    break
                run(f"PRAGMA incremental_vacuum({INCREMENTAL_VACUUM_PAGES});")
        run("ANALYZE;")
    else:
        import psycopg2  # dagster-postgres brings it; only a Postgres catalog needs it

        pg = psycopg2.connect(settings.lake_catalog.removeprefix("postgres:"))
        try:
            pg.autocommit = True
            with pg.cursor() as cur:
                cur.execute("VACUUM (ANALYZE)")
        finally:
            pg.close()
    after = catalog_bytes(con)
    if before >= 0 and after >= 0:
        report.catalog_bytes_freed = max(0, before - after)
    return report


# --- passes and health --------------------------------------------------------------------------------------------

COMPACT_STEPS = ("cleanup", "flush", "rewrite", "merge", "expire")
CATALOG_STEPS = ("orphans", "catalog")


def run_steps(
    con: duckdb.DuckDBPyConnection, settings: Settings, steps: Iterable[str], now: datetime | None = None
) -> UpkeepReport:
    """Run maintenance ``steps`` (names of :data:`COMPACT_STEPS` and :data:`CATALOG_STEPS`) in the order given.

    ``cleanup`` comes first in a pass: it deletes what earlier passes left for deletion once the delay has passed,
    before this pass schedules more. ``now`` is for tests (the cutoffs are computed from it).
    """
    now = now or datetime.now(timezone.utc)
    started = time.monotonic()
    report = UpkeepReport()
    target = parse_size(settings.lake_target_file_size)
    delay = settings.lake_file_cleanup_delay or timedelta(0)
    for step in steps:
        if step == "cleanup":
            part = delete_old_files(con, now - delay)
        elif step == "flush":
            part = flush_inlined(con)
        elif step == "rewrite":
            part = rewrite_deletes(con, settings.lake_rewrite_delete_threshold, target)
        elif step == "merge":
            part = merge_small_files(con, target)
        elif step == "expire":
            retention, thin_after = settings.lake_snapshot_retention, settings.lake_snapshot_thin_after
            if retention is None and thin_after is None:
                continue
            part = expire_snapshots(con, now - retention if retention is not None else None,
                                    thin_before=now - thin_after if thin_after is not None else None)
        elif step == "orphans":
            part = delete_orphaned_files(con, now - delay)
        elif step == "catalog":
            part = catalog_upkeep(con, settings)
        else:
            raise ValueError(f"unknown maintenance step {step!r}: expected one of {COMPACT_STEPS + CATALOG_STEPS}")
        log.info("lake maintenance %s: %s", step, {k: v for k, v in asdict(part).items() if v})
        report.add(part)
    report.seconds = time.monotonic() - started
    return report


def lake_health(con: duckdb.DuckDBPyConnection, now: datetime | None = None) -> dict[str, Any]:
    """Figures of the lake's state: totals, and live files per table (``live_files.<schema>.<table>``)."""
    now = now or datetime.now(timezone.utc)
    per_table = con.execute(
        f"""SELECT s.schema_name || '.' || t.table_name, count(f.data_file_id), coalesce(sum(f.file_size_bytes), 0)
            FROM {METADATA}.ducklake_table t JOIN {METADATA}.ducklake_schema s USING (schema_id)
            LEFT JOIN {METADATA}.ducklake_data_file f ON f.table_id = t.table_id AND f.end_snapshot IS NULL
            WHERE t.end_snapshot IS NULL AND s.end_snapshot IS NULL GROUP BY ALL ORDER BY 1"""
    ).fetchall()
    deletes = con.execute(
        f"SELECT count(*), coalesce(sum(file_size_bytes), 0) FROM {METADATA}.ducklake_delete_file "
        "WHERE end_snapshot IS NULL"
    ).fetchone()
    snapshots = con.execute(
        f"""SELECT count(*), (SELECT CAST(snapshot_time AS TIMESTAMPTZ) FROM {METADATA}.ducklake_snapshot
                              ORDER BY snapshot_id LIMIT 1)
            FROM {METADATA}.ducklake_snapshot"""
    ).fetchone()
    scheduled = con.execute(
        f"SELECT count(*) FROM {METADATA}.ducklake_files_scheduled_for_deletion"
    ).fetchone()[0]
    live_files = sum(r[1] for r in per_table)
    live_bytes = sum(r[2] for r in per_table)
    figures: dict[str, Any] = {
        "live_files": live_files,
        "live_bytes": live_bytes,
        "avg_file_bytes": live_bytes / live_files if live_files else 0.0,
        "delete_files": deletes[0],
        "delete_bytes": deletes[1],
        "inlined_rows": sum(inlined_rows(con).values()),
        "snapshots": snapshots[0],
        "oldest_snapshot_age_hours": (now - snapshots[1]).total_seconds() / 3600 if snapshots[1] else 0.0,
        "files_awaiting_deletion": scheduled,
        "catalog_bytes": catalog_bytes(con),
    }
    for table, files, _bytes in per_table:
        figures[f"live_files.{table}"] = files
    return figures
