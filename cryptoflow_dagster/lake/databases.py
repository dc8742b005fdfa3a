"""One DuckDB database per process and lake, with the DuckLake catalog attached as ``lake``; connections and sessions
are its cursors (ADR 0014).

The catalog is SQLite (embedded default, switched to write-ahead logging) or Postgres, the data path local or
S3-compatible, both from settings.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from cryptoflow_core.retry import retry
from cryptoflow_core.settings import Settings, load_settings
from cryptoflow_dagster.lake.errors import is_retryable
from cryptoflow_dagster.lake.extensions import install_extensions
from cryptoflow_dagster.lake.sql import CATALOG, literal

log = logging.getLogger(__name__)

# What _configure_object_store reads: a change opens a new database, with the new credentials.
_OBJECT_STORE_ENV = ("CRYPTOFLOW_S3_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")


def _configure_object_store(con: duckdb.DuckDBPyConnection, settings: Settings) -> None:
    """Credentials for an S3-compatible data path come from the standard AWS_* variables, never from settings files."""
    if not settings.data_path.startswith("s3://"):
        return
    endpoint = os.environ.get("CRYPTOFLOW_S3_ENDPOINT", "")
    # CREATE SECRET takes no prepared parameters: values become quoted SQL literals.
    options = ["TYPE s3", "PROVIDER config"]
    for key, env in (("KEY_ID", "AWS_ACCESS_KEY_ID"), ("SECRET", "AWS_SECRET_ACCESS_KEY"), ("REGION", "AWS_REGION")):
        if os.environ.get(env):
            options.append(f"{key} {literal(os.environ[env])}")
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        options += [f"ENDPOINT {literal(host or scheme)}", f"USE_SSL {str(scheme == 'https').lower()}", "URL_STYLE 'path'"]
    con.execute("CREATE OR REPLACE SECRET cryptoflow_s3 (" + ", ".join(options) + ")")


def connect(
    settings: Settings | None = None, *, read_only: bool = False, snapshot: int | None = None
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the lake attached as ``lake`` and selected as the default catalog.

    ``snapshot``: the lake as it was at that snapshot id (DuckLake time travel: attached with ``SNAPSHOT_VERSION``, so
    every table reference reads that snapshot); read-only only, and never the database of the live lake.

    Connections are cursors of one in-memory DuckDB database per process and lake (:func:`_cursor`): opening a
    database costs ~0.25 s of CPU (DuckDB checks the signature of the two 35 MB extension binaries on every LOAD) and
    ~50 MB of memory, which the sensors of a code server paid on every tick (ADR 0014). A cursor costs ~6 ms and has
    its own transactions and session settings; DuckLake starts every transaction from the catalog's latest snapshot,
    so a cursor sees what other processes committed as a new database would.
    """
    settings = settings or load_settings()
    snapshot = _snapshot_id(snapshot, read_only)
    if not settings.data_path.startswith(("s3://", "gs://", "http")):
        Path(settings.data_path).mkdir(parents=True, exist_ok=True)
    con = _cursor(settings, read_only, snapshot)
    try:
        # Session settings, per cursor. DuckDB draws a progress bar on stdout for any query slower than 2 s, even
        # without a terminal: it would land in `cryptoflow query --format json` output, in a subprocess's protocol
        # lines and in Dagster's captured logs.
        con.execute("SET enable_progress_bar = false")
        con.execute("SET TimeZone = 'UTC'")  # TIMESTAMPTZ values print and truncate in UTC, as the contract says
        con.execute(f"USE {CATALOG}")
    except Exception:
        con.close()
        raise
    return con


# DuckLake on a SQLite catalog is safe across processes (SQLite's file locks) but not for two threads of one process:
# measured with three writer threads, commits failed "disk I/O error" / "database is locked" outside lake.write's
# retries. Dagster evaluates sensors on threads of one code server (instance.py), so sessions on a SQLite catalog
# take this process-wide lock for their lifetime. Single-threaded processes (runs, the CLI) never wait on it; a
# Postgres catalog does not need it.
_SQLITE_SESSIONS = threading.RLock()


@contextmanager
def session(
    settings: Settings | None = None, *, read_only: bool = False, snapshot: int | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    settings = settings or load_settings()
    guard = _SQLITE_SESSIONS if _sqlite_catalog_file(settings) is not None else nullcontext()
    with guard:
        con = connect(settings, read_only=read_only, snapshot=snapshot)
        try:
            yield con
        finally:
            con.close()


@dataclass
class _Database:
    base: duckdb.DuckDBPyConnection
    catalog_id: tuple[int, int] | None  # (device, inode) of a SQLite catalog file when it was attached
    cursors: weakref.WeakSet = field(default_factory=weakref.WeakSet)


# One database per (lake, mode, snapshot, memory limit, object store credentials) and process, most recently used last:
# a database attached at a snapshot is never the live lake's. A process normally has one; the test suite makes one per test's home, so those no cursor holds are closed beyond the
# newest few (closing a database closes its cursors).
_DATABASES: OrderedDict[tuple, _Database] = OrderedDict()
_DATABASES_LOCK = threading.Lock()
_IDLE_DATABASES_KEPT = 2


def _cursor(settings: Settings, read_only: bool, snapshot: int | None = None) -> duckdb.DuckDBPyConnection:
    """A new cursor of this lake's database (opened if needed); idle databases beyond the newest few are closed."""
    catalog_file = _sqlite_catalog_file(settings)
    store = hashlib.sha256(repr([os.environ.get(k) for k in _OBJECT_STORE_ENV]).encode()).hexdigest()
    key = (settings.catalog_uri, settings.data_path, read_only, snapshot, settings.duckdb_memory_limit,
           str(settings.extension_dir), store)
    with _DATABASES_LOCK:
        database = _DATABASES.get(key)
        if database is not None and database.catalog_id != _file_id(catalog_file):
            # The catalog file was removed or replaced (a reset lake): the attached one is gone. The new file is another
            # inode, which no SQLite library of this process holds: _use_wal may open it.
            del _DATABASES[key]
            _WAL_CHECKED.discard(catalog_file)
            if not database.cursors:
                database.base.close()
            database = None
        if database is None:
            database = _DATABASES[key] = _open_database(settings, read_only, catalog_file, snapshot)
        _DATABASES.move_to_end(key)
        con = database.base.cursor()
        database.cursors.add(con)
        idle = [k for k, d in _DATABASES.items() if not d.cursors]
        for k in idle[: max(0, len(idle) - _IDLE_DATABASES_KEPT)]:
            _DATABASES.pop(k).base.close()
        return con


def _open_database(
    settings: Settings, read_only: bool, catalog_file: Path | None, snapshot: int | None = None
) -> _Database:
    if settings.catalog_uri.startswith("ducklake:sqlite:"):
        settings.lake_dir.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(":memory:")
    try:
        if settings.duckdb_memory_limit:  # unset: DuckDB's own default (80 % of RAM)
            con.execute("SET memory_limit = ?", [settings.duckdb_memory_limit])
        if "://" not in settings.data_path:
            # DuckDB keeps the blocks of every file it reads in memory, up to memory_limit: in a long-lived process
            # that reads each new stream file (the API's live feed, the sensors) that was ~55 KB a commit, +400 MiB an
            # hour at 250 markets (benchmarks/results/endurance.json). Local files are in the OS page cache anyway.
            con.execute("SET enable_external_file_cache = false")
        install_extensions(con, settings)
        _configure_object_store(con, settings)
        options = f"DATA_PATH {literal(settings.data_path)}" + (", READ_ONLY" if read_only else "")
        if snapshot is not None:
            options += f", SNAPSHOT_VERSION {snapshot}"  # an int (_snapshot_id): nothing else reaches the SQL
        if catalog_file is not None and (catalog_file.exists() or not read_only):
            _use_wal(catalog_file)
        _attach(con, f"ATTACH {literal(settings.catalog_uri)} AS {CATALOG} ({options})")
    except Exception:
        con.close()
        raise
    return _Database(con, _file_id(catalog_file))


def _snapshot_id(snapshot: int | None, read_only: bool) -> int | None:
    if snapshot is None:
        return None
    if isinstance(snapshot, bool) or not isinstance(snapshot, int) or snapshot < 0:
        raise ValueError(f"a lake snapshot is a snapshot id (an int >= 0), not {snapshot!r}")
    if not read_only:
        raise ValueError("the lake at an earlier snapshot can only be opened read-only")
    return snapshot


@contextmanager
def snapshot_attached(
    con: duckdb.DuckDBPyConnection, snapshot: int, alias: str, settings: Settings | None = None
) -> Iterator[str]:
    """The lake at ``snapshot`` attached read-only as ``alias`` beside ``lake`` on ``con``'s database, for the work
    of one transaction that reads an earlier state while it writes the current one (``cryptoflow restore``); detached
    afterwards. ATTACH is database-wide: the other cursors of the database see ``alias`` meanwhile.

    (DuckLake 1.5.5's ``tbl AT (VERSION => n)`` is no use there: inside a transaction it applies the transaction's own
    deletes to the earlier snapshot's rows too, so DELETE then INSERT ... SELECT ... AT (VERSION => n) inserts nothing.)
    """
    settings = settings or load_settings()
    snapshot = _snapshot_id(snapshot, True)
    if not alias.isidentifier() or not alias.isascii() or alias == CATALOG:
        raise ValueError(f"not an alias for an attached lake: {alias!r}")
    options = f"DATA_PATH {literal(settings.data_path)}, READ_ONLY, SNAPSHOT_VERSION {snapshot}"
    _attach(con, f"ATTACH {literal(settings.catalog_uri)} AS {alias} ({options})")
    try:
        yield alias
    finally:
        con.execute(f"DETACH {alias}")


def _file_id(path: Path | None) -> tuple[int, int] | None:
    if path is None:
        return None
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def _sqlite_catalog_file(settings: Settings) -> Path | None:
    """The SQLite catalog's file, or None for a Postgres catalog."""
    prefix = "ducklake:sqlite:"
    return Path(settings.catalog_uri[len(prefix):]) if settings.catalog_uri.startswith(prefix) else None


def _use_wal(catalog_file: Path) -> None:
    """Put a SQLite catalog in write-ahead-log mode (once: the mode is stored in the file).

    In SQLite's default rollback-journal mode a committing writer locks readers out and any reader holds writers off,
    so with several runs at once every catalog read (the snapshot lookup that starts each DuckLake transaction) could
    fail "database is locked" for seconds, past lake.write's retries (tests/test_concurrency_backfill.py found this
    with 4 backfill runs and a streaming run). In WAL mode readers and the one writer never block each other; only
    writers race, and lake.write retries the loser. WAL needs the catalog on a local disk (docs/decisions/0008).

    Once per catalog and process, before this process's first ATTACH of it (a new catalog is created here, already in
    WAL mode): closing a file that another SQLite library in the same process (DuckDB's) holds open would drop that
    library's POSIX locks on it, so the file is never opened here again once DuckDB may have it open.
    """
    if catalog_file in _WAL_CHECKED:
        return
    _WAL_CHECKED.add(catalog_file)  # tried once per process, even if busy (see above); the next process tries again
    db = sqlite3.connect(catalog_file, timeout=10)
    try:
        if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            db.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError as exc:
        log.warning("could not switch %s to WAL mode (busy): %s", catalog_file, exc)
    finally:
        db.close()


_WAL_CHECKED: set[Path] = set()


def _attach(con: duckdb.DuckDBPyConnection, sql: str, attempts: int = 20) -> None:
    """ATTACH reads the catalog, which a SQLite catalog locks while another process commits (well under a second):
    retry that, bounded and with jitter, so readers such as ``cryptoflow query`` work while the platform writes."""
    retry(lambda: con.execute(sql), retryable=lambda exc: isinstance(exc, duckdb.Error) and is_retryable(exc),
          attempts=attempts, base_s=0.05, cap_s=1.0, jitter="equal")
