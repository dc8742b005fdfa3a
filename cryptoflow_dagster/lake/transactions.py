"""Writing to the lake: :func:`write` runs a unit of work in one transaction, taking the writers' turn across processes,
and runs it again, after a backoff, when DuckLake reports that its commit lost a race to another writer: a failed
attempt leaves nothing behind, so a retry cannot double rows."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import duckdb

from cryptoflow_core.host_lock import HostLock
from cryptoflow_core.retry import retry
from cryptoflow_dagster.lake.errors import is_retryable
from cryptoflow_dagster.lake.sql import CATALOG

log = logging.getLogger(__name__)

T = TypeVar("T")

# A writer kept waiting for its turn this long logs who holds it, and again at this interval while it waits: the wait
# has no timeout (giving up would lose the writer's work), so a holder that hangs must at least be visible.
TURN_WARN_S = 60.0


def write(
    con: duckdb.DuckDBPyConnection,
    work: Callable[[duckdb.DuckDBPyConnection], T],
    *,
    attempts: int = 10,
    base_delay_s: float = 0.05,
    max_delay_s: float = 2.0,
) -> T:
    """Run ``work(con)`` inside one transaction; retry the whole unit when the commit lost a race.

    ``work`` must be re-runnable: it is called again from the start after a rollback. Anything but a lost race is raised
    at once. Bounded: after ``attempts`` lost races the last error is raised. The wait before retry n is equal-jittered
    (half of ``min(max_delay_s, base_delay_s * 2 ** (n - 1))`` plus up to the other half).
    """

    def once() -> T:
        try:
            with writer_turn(con):
                con.execute("BEGIN TRANSACTION")
                result = work(con)
                con.execute("COMMIT")
            return result
        except Exception:
            try:
                con.execute("ROLLBACK")
            except duckdb.Error:
                pass  # a failed COMMIT already ended the transaction; nothing is left to roll back
            raise

    def lost_race(attempt: int, wait_s: float, exc: Exception) -> None:
        log.info("lake commit lost a race (attempt %d/%d), retrying in %.2fs: %s", attempt, attempts, wait_s, exc)

    return retry(once, retryable=is_retryable, attempts=attempts, base_s=base_delay_s, cap_s=max_delay_s,
                 jitter="equal", on_retry=lost_race)


_TURNS = threading.local()


@contextmanager
def writer_turn(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Writers to a SQLite catalog take turns across processes, transaction and all (a :class:`HostLock` on a file
    beside the catalog; the OS drops it if its holder dies). :func:`write` takes it for its transaction; hold it
    yourself around several ``write`` calls when no other writer may commit between them (lake maintenance flushes a
    table's inlined rows and rewrites its files with nothing inlined in between).

    DuckLake's commit fails ("database is locked") whenever another process committed since the transaction began, so
    racing, a long transaction (a streaming chunk: seconds of work) lost to every short commit of 4 backfill runs until
    lake.write's attempts ran out (tests/test_concurrency_backfill.py; serializing only the COMMITs did not help).
    Taking turns, no lake.write commit loses to another; the work a lost race threw away is now a wait instead.
    Readers never take it (WAL). dbt's commits do not come here: gold retries its build (defs/gold/).
    """
    path = con.execute("SELECT path FROM duckdb_databases() WHERE database_name = ?", [CATALOG]).fetchone()[0] or ""
    held = _TURNS.__dict__.setdefault("paths", set())
    if not path.startswith("sqlite:") or path in held:  # Postgres: MVCC; held: a write inside this thread's own turn
        yield
        return
    turn = HostLock(path[len("sqlite:"):] + ".writer-lock")
    try:
        turn.hold(warn_every_s=TURN_WARN_S, what="lake writer turn", logger=log)
        held.add(path)
        yield
    finally:
        held.discard(path)
        turn.release()
