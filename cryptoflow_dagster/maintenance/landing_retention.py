"""Landing retention: delete micro-batch files the lake already holds, once they are old enough.

The landing folder is a buffer, not an archive: bronze keeps every frame verbatim. A file is deleted only when it is
older than the retention and ``ops.ingested_files`` records it, so a file that never made it into the lake (a
streaming run down for a week) is kept however old it is: nothing is lost to housekeeping.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import duckdb

from cryptoflow_dagster.streaming.ingest import not_ingested
from cryptoflow_core import landing_files

log = logging.getLogger(__name__)


@dataclass
class PruneReport:
    deleted_files: int = 0
    deleted_bytes: int = 0
    kept_not_ingested: int = 0
    removed_dirs: int = 0


def prune_landing(con: duckdb.DuckDBPyConnection, root, older_than: datetime) -> PruneReport:
    """Delete landing files written before ``older_than`` that are in the ledger; empty day folders go too."""
    report = PruneReport()
    old = [f for f in landing_files.list_files(root) if f.written_at < older_than]
    pending = {f.relative for f in not_ingested(con, old)}
    report.kept_not_ingested = len(pending)
    for f in old:
        if f.relative in pending:
            continue
        try:
            size = f.path.stat().st_size
            f.path.unlink()
        except FileNotFoundError:  # another pruner got there first
            continue
        report.deleted_files += 1
        report.deleted_bytes += size
    for f in old:
        folder = f.path.parent
        if folder.exists() and f.day < older_than.date() and not any(folder.iterdir()):
            folder.rmdir()
            report.removed_dirs += 1
    if report.kept_not_ingested:
        log.warning("%d landing files older than %s are not in the lake yet: kept", report.kept_not_ingested, older_than)
    return report
