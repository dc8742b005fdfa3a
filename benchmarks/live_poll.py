"""The API live feed's reads per poll on a lake the platform made (issue 18: the API's CPU grew through the hour).

``CRYPTOFLOW_HOME=<home> python -m benchmarks.live_poll LABEL`` opens the lake of ``<home>`` (an endurance run's:
it is kept after the run) and reads, for the newest ``PAIRS`` pairs of consecutive snapshots (what one poll spans at
1,000 trades/s: the streaming run commits every ~0.25 s), the rows the feed pushes from ``silver.trades``,
``gold.ohlcv_1m_from_trades`` and ``gold.alerts`` two ways, interleaved: ``ducklake_table_changes`` filtered to
inserts and updates' new images (the feed before) and ``ducklake_table_insertions`` (the feed now). The rows must be
equal; the time is per read, median and spread, and per poll (the three reads).
"""

from __future__ import annotations

import sys
import time

from benchmarks.common import Result

TABLES = ("silver.trades", "gold.ohlcv_1m_from_trades", "gold.alerts")
PAIRS = 30
WAYS = {
    "changes": "SELECT * EXCLUDE (snapshot_id, rowid, change_type) FROM ducklake_table_changes(?, ?, ?, ?, ?) "
               "WHERE change_type IN ('insert', 'update_postimage')",
    "insertions": "SELECT * FROM ducklake_table_insertions(?, ?, ?, ?, ?)",
}


def run(pairs: int = PAIRS) -> Result:
    from cryptoflow_core.settings import load_settings
    from cryptoflow_dagster import lake

    result = Result("live_poll", f"{pairs} polls over one snapshot each, {len(TABLES)} tables")
    times: dict[tuple[str, str], list[float]] = {(t, w): [] for t in TABLES for w in WAYS}
    per_poll: dict[str, list[float]] = {w: [] for w in WAYS}
    rows = {t: 0 for t in TABLES}
    with lake.session(load_settings()) as con:
        last = con.execute("SELECT max(snapshot_id) FROM ducklake_snapshots(?)", [lake.CATALOG]).fetchone()[0]
        facts = con.execute("SELECT count(*) FROM ducklake_snapshots(?)", [lake.CATALOG]).fetchone()[0]
        for i in range(pairs):
            first = last - 2 * pairs + 2 * i
            poll = {w: 0.0 for w in WAYS}
            got = {}
            for table in TABLES:
                schema, name = table.split(".")
                for way, sql in WAYS.items():
                    began = time.perf_counter()
                    out = con.execute(sql, [lake.CATALOG, schema, name, first, first + 1]).fetchall()
                    took = time.perf_counter() - began
                    times[(table, way)].append(took)
                    poll[way] += took
                    got[way] = sorted(map(repr, out))
                if got["changes"] != got["insertions"]:
                    raise AssertionError(f"{table}: the two reads differ between snapshots {first} and {first + 1}")
                rows[table] += len(got["insertions"])
            for way in WAYS:
                per_poll[way].append(poll[way])
    for table in TABLES:
        result.add(f"{table}: read per poll, ducklake_table_changes (before)", "s", times[(table, "changes")])
        result.add(f"{table}: read per poll, ducklake_table_insertions", "s", times[(table, "insertions")], None,
                   f"{table}: read per poll, ducklake_table_changes (before)",
                   f"{rows[table]:,} rows over {pairs} polls")
    result.add("the feed's three reads per poll, before", "s", per_poll["changes"])
    result.add("the feed's three reads per poll", "s", per_poll["insertions"], None,
               "the feed's three reads per poll, before", f"lake of {facts:,} snapshots")
    return result


if __name__ == "__main__":
    from benchmarks.common import RESULTS, write_result

    if len(sys.argv) != 2:
        sys.exit("usage: CRYPTOFLOW_HOME=<an endurance run's home> python -m benchmarks.live_poll <label>")
    out = run()
    out.benchmark = f"live_poll_{sys.argv[1]}"
    print(write_result(out, RESULTS))
