"""Read-only lake sessions for the API: every answer is read inside one transaction, so all its queries see one
snapshot (never half of a writer's commit), and the snapshot id travels with the answer.

Sessions come from ``cryptoflow_dagster.lake`` (the one way into the lake): one DuckDB database per process, a cursor
per session, and on a SQLite catalog the process-wide session lock (ADR 0014), so reads of this process take turns.
They run on a small thread pool so the event loop never waits on DuckDB. A reader takes no writer's turn and, with the
catalog in WAL mode, no lock a writer waits for; how long each read transaction stays open is recorded
(:attr:`Reader.held`) because that is what a writer's checkpoint and file cleanup wait behind (ADR 0020).
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import duckdb

from cryptoflow_core.settings import Settings
from cryptoflow_dagster import lake
from cryptoflow_serving.errors import ApiError

log = logging.getLogger(__name__)
T = TypeVar("T")

_MISSING_TABLE = re.compile(r"Table with name (\w+) does not exist")
_ATTEMPTS = 5


class Reader:
    def __init__(self, settings: Settings, workers: int = 4):
        self.settings = settings
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="lake-read")
        self.held: deque[float] = deque(maxlen=10_000)  # seconds each read transaction was open, newest last
        self._lock = threading.Lock()
        self.reads = 0

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    async def run(self, work: Callable[[duckdb.DuckDBPyConnection, int], T], table: Any = None) -> T:
        """``work(con, snapshot)`` in a read transaction on a worker thread; ``table`` (a queries.Resource) names what
        builds the table when it is missing."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.read, work, table)

    def read(self, work: Callable[[duckdb.DuckDBPyConnection, int], T], table: Any = None) -> T:
        self._check_lake()
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                return self._once(work)
            except duckdb.CatalogException as exc:
                raise _missing(exc, table) from None
            except duckdb.Error as exc:
                # a catalog a committing writer locks for a moment: the reader waits, it is not the client's error
                if not lake.is_retryable(exc) or attempt == _ATTEMPTS:
                    raise
                time.sleep(0.02 * attempt)
        raise AssertionError("unreachable")

    def _once(self, work: Callable[[duckdb.DuckDBPyConnection, int], T]) -> T:
        with lake.session(self.settings, read_only=True) as con:
            # A table missing from the lake must be a missing table, never a Python object of that name: DuckDB's
            # replacement scans would otherwise read a variable called like it from the calling frames.
            con.execute("SET python_enable_replacements = false")
            began = time.perf_counter()
            con.execute("BEGIN TRANSACTION")
            try:
                snapshot = con.execute("SELECT id FROM current_snapshot()").fetchone()[0]
                return work(con, snapshot)
            finally:
                con.execute("ROLLBACK")  # nothing to keep: a read-only transaction
                with self._lock:
                    self.held.append(time.perf_counter() - began)
                    self.reads += 1

    def _check_lake(self) -> None:
        uri = self.settings.catalog_uri
        prefix = "ducklake:sqlite:"
        if uri.startswith(prefix) and not Path(uri[len(prefix):]).exists():
            raise ApiError(503, "lake_unavailable", f"no lake at {uri[len(prefix):]} yet: run `cryptoflow demo` (or any "
                           "ingestion) first, or point CRYPTOFLOW_HOME at an existing lake")


def _missing(exc: duckdb.CatalogException, resource: Any) -> ApiError | duckdb.CatalogException:
    match = _MISSING_TABLE.search(str(exc))
    if match is None or resource is None:
        return exc
    status = getattr(resource, "missing_status", 503)
    return ApiError(status, "not_built" if status == 503 else "not_found",
                    f"{resource.table} does not exist yet in this lake: it is built by {resource.builds}",
                    table=resource.table)
