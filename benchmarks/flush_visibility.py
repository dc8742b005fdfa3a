"""Do readers in other processes see a table's rows while lake maintenance flushes its inlined rows? (ADR 0005,
addendum 2; issues 16 and 18: a read must never see less than an earlier commit.)

Three processes on one SQLite-catalog lake, as the platform runs them: a writer records two alerts in
``gold.alerts`` every 50 ms (DuckLake inlines inserts this small into the catalog), a maintainer flushes the inlined
rows every 0.3 s (``lake_upkeep.flush_inlined``, each in the writers' turn, as the maintenance job does), and a reader
counts the table in a fresh session, over and over. A count below one the reader saw before is a read that missed
committed rows. The baseline, in the same run: the same writer and reader with no flush.

``python -m benchmarks.flush_visibility [seconds]`` (default 60 s per arm): writes results/flush_visibility.json.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import tempfile
import time
from datetime import datetime, timezone

from benchmarks.common import Result


def _writer(home: str, stop) -> None:
    os.environ["CRYPTOFLOW_HOME"] = home
    from cryptoflow_dagster import lake
    from cryptoflow_dagster.alerting import outbox
    from cryptoflow_dagster.alerting.model import Alert

    i = 0
    with lake.session() as con:
        while not stop.is_set():
            now = datetime.now(timezone.utc)
            outbox.record(con, [Alert(rule="price_move", dedupe_key=f"k{i}-{j}", message="m", triggered_at=now,
                                      exchange="x", market=f"M{i}-{j}", event_time=now) for j in range(2)])
            i += 1
            time.sleep(0.05)


def _maintainer(home: str, stop) -> None:
    os.environ["CRYPTOFLOW_HOME"] = home
    from cryptoflow_dagster import lake
    from cryptoflow_dagster.maintenance import lake_upkeep

    with lake.session() as con:
        while not stop.is_set():
            lake_upkeep.flush_inlined(con)
            time.sleep(0.3)


def _reader(home: str, stop, out) -> None:
    os.environ["CRYPTOFLOW_HOME"] = home
    from cryptoflow_dagster import lake

    highest, short, reads, worst = 0, 0, 0, 0
    while not stop.is_set():
        with lake.session(read_only=True) as con:
            n = con.execute("SELECT count(*) FROM gold.alerts").fetchone()[0]
        reads += 1
        if n < highest:
            short += 1
            worst = max(worst, highest - n)
        highest = max(highest, n)
    out.put({"reads": reads, "short_reads": short, "most_rows_missed": worst, "rows": highest})


def _arm(seconds: float, flush: bool) -> dict:
    home = tempfile.mkdtemp(prefix="bench-flush-")
    os.environ["CRYPTOFLOW_HOME"] = home
    from cryptoflow_dagster import lake

    with lake.session() as con:
        lake.ensure_schema(con)
    ctx = mp.get_context("spawn")
    stop, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(home, stop)), ctx.Process(target=_reader, args=(home, stop, out))]
    if flush:
        procs.append(ctx.Process(target=_maintainer, args=(home, stop)))
    for p in procs:
        p.start()
    time.sleep(seconds)
    stop.set()
    got = out.get(timeout=120)
    for p in procs:
        p.join(60)
    return got


def run(seconds: float) -> Result:
    result = Result("flush_visibility", f"a reader's counts of gold.alerts while a writer records 2 alerts every 50 ms, "
                                        f"with and without a flush of inlined rows every 0.3 s; {seconds:g} s each")
    plain, flushing = _arm(seconds, flush=False), _arm(seconds, flush=True)
    result.add("reads that missed committed rows, no flush (baseline)", "reads", [plain["short_reads"]],
               note=f"{plain['reads']} reads, {plain['rows']} rows at the end")
    result.add("reads that missed committed rows, flushing", "reads", [flushing["short_reads"]], ("<=", 0),
               baseline="reads that missed committed rows, no flush (baseline)",
               note=f"{flushing['reads']} reads, at most {flushing['most_rows_missed']} rows missed at once")
    result.details = {"no_flush": plain, "flushing": flushing}
    return result


if __name__ == "__main__":
    from benchmarks.common import RESULTS, write_result

    print(write_result(run(float(sys.argv[1]) if len(sys.argv) > 1 else 60.0), RESULTS))
