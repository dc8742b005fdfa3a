"""Issue 7, concurrency: a 20-day backfill runs 4 runs at a time while the stream keeps flowing, and the lake ends up
exactly as a serial run leaves it.

The platform is the deployed one: Dagster webserver + daemon (the processes `cryptoflow demo` and a deployment start)
against the exchange simulator, the sidecar streaming trades that the daemon's sensor ingests, and gold following silver
through its automation sensor. The backfill is launched with `cryptoflow backfill`, split into 4 runs of 5 days by
CRYPTOFLOW_BACKFILL_DAYS_PER_RUN (docs/decisions/0008-backfill-concurrency.md). The reference is the same 20 days run
serially, in process, into a second lake (the daily batch job over the whole range, then the dbt marts).

Layers covered: bronze (candles, Fear & Greed), silver (1m, 1d, Fear & Greed, dead letters) and the four dbt gold marts.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from datetime import date, timedelta

import dagster as dg
import pytest
import yaml

from cryptoflow_dagster import lake
from cryptoflow_dagster.cli import services
from cryptoflow_dagster.cli.children import Children
from cryptoflow_dagster.cli.demo import child_env
from cryptoflow_dagster.instance import instance_config, prepare_instance
from cryptoflow_core.settings import Settings, load_settings
from cryptoflow_dagster.webserver import wait_until_loaded
from exchange_sim.testing import running_sim
from cryptoflow_core import landing_files
from cryptoflow_core.heartbeat import read_heartbeat

START = date(2025, 9, 1)  # the simulator's history replays the recorded Upbit minutes of 2025-09
DAYS = 20
END = START + timedelta(days=DAYS - 1)
DAYS_PER_RUN = 5  # 20 days -> 4 runs
RUNS_AT_ONCE = 4
UPBIT, BINANCE = "KRW-BTC", "BTCUSDT"
MARKETS = [("upbit", UPBIT), ("binance", BINANCE)]
GOLD_MARTS = ("volatility_daily", "volatility_rolling", "indicators_daily", "sentiment_daily")

# What two runs of the same partitions must agree on: every column but the run id and the time of the run.
COMPARED = {
    "bronze.candles_raw": "exchange, market, interval, candle_start, raw_json, unique_key, api_params_json, day",
    "bronze.fear_greed_raw": "day, raw_json",
    "silver.candles_1m": "exchange, market, ts, open, high, low, close, volume, quote_volume, day",
    "silver.candles_1d": "exchange, market, day, open, high, low, close, volume, quote_volume",
    "silver.fear_greed": "day, value, classification",
    "bronze.dead_letters": "source, raw, error, exchange, market, day",
    **{f"gold.{mart}": "*" for mart in GOLD_MARTS},
}
# The line lake.write logs when a commit lost a race and is about to be retried (it reaches the event log through the
# instance's python_logs setting below).
RETRY_LOG = "lake commit lost a race"
LOCK_OR_CONFLICT = re.compile(r"\block(ed|s)?\b|conflict|could not serialize|deadlock", re.IGNORECASE)
IN_FLIGHT = {dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
             dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING}


def write_instance_yaml(settings: Settings) -> None:
    """The platform's dagster.yaml with room for 4 backfill runs beside the streaming and gold runs (dagster.yaml is the
    operator's: raising the limits is what an operator who wants this does), and lake.write's retry lines captured."""
    config = instance_config(settings)
    runs = config["concurrency"]["runs"]
    runs["max_concurrent_runs"] = RUNS_AT_ONCE + 4  # + a streaming run, a gold run, alert and repair runs
    runs["tag_concurrency_limits"] = [{"key": "dagster/backfill", "limit": RUNS_AT_ONCE}]
    config["python_logs"] = {"managed_python_loggers": ["cryptoflow_dagster.lake"], "python_log_level": "INFO"}
    settings.dagster_home.mkdir(parents=True, exist_ok=True)
    (settings.dagster_home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def serial_reference(sim, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same 20 days in one in-process run into this test's own lake, then the dbt marts: the reference."""
    from cryptoflow_dagster.dbt_project import dbt_resource
    from cryptoflow_dagster.definitions import defs as load_code_location
    from cryptoflow_dagster.defs.gold.dbt import gold_dbt_assets
    from cryptoflow_dagster.resources import LakeResource

    for key, value in sim.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CRYPTOFLOW_UPBIT_MARKETS", UPBIT)
    monkeypatch.setenv("CRYPTOFLOW_BINANCE_SYMBOLS", BINANCE)
    defs = load_code_location()  # after the settings: its resources are filled from them
    tags = {"dagster/asset_partition_range_start": str(START), "dagster/asset_partition_range_end": str(END)}
    with dg.DagsterInstance.ephemeral() as instance:  # disposed: its artifact directory goes with it
        assert defs.resolve_job_def("daily_batch").execute_in_process(instance=instance, tags=tags).success
        assert dg.materialize([gold_dbt_assets()], resources={"dbt": dbt_resource(), "lake": LakeResource()},
                              instance=instance).success


def table_rows(settings: Settings, table: str) -> list[tuple]:
    with lake.session(settings, read_only=True) as con:
        return con.execute(f"SELECT {COMPARED[table]} FROM {table} ORDER BY ALL").fetchall()


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant (an end and a start at the same instant do not overlap)."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals], key=lambda e: (e[0], e[1]))
    open_now = peak = 0
    for _, step in edges:
        open_now += step
        peak = max(peak, open_now)
    return peak


def is_gold_run(record: dg.RunRecord) -> bool:
    return any(key.path[0] == "gold" for key in record.dagster_run.asset_selection or ())


def gold_built_after(instance: dg.DagsterInstance, mart: dg.AssetKey, silver_done: float) -> bool:
    """Is the mart's latest materialization from a dbt attempt that started after the last silver write? (A gold run
    requested before it may still be retrying its build, and then it read the final silver too.)"""
    event = instance.get_latest_materialization_event(mart)
    if event is None or event.timestamp < silver_done:
        return False
    starts = [e.timestamp for e in instance.all_logs(
        event.run_id, of_type={dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_RESTARTED})
        if e.timestamp <= event.timestamp]
    return bool(starts) and max(starts) >= silver_done


def wait_for_gold_after(instance: dg.DagsterInstance, silver_done: float, timeout_s: float = 900) -> list[dg.RunRecord]:
    """The gold runs the automation sensor started (it may split the marts over several), once every mart was built
    from the final silver and no gold run is pending."""
    marts = [dg.AssetKey(["gold", mart]) for mart in GOLD_MARTS]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        gold = [r for r in instance.get_run_records() if is_gold_run(r)]
        pending = [r for r in gold if r.dagster_run.status in IN_FLIGHT]
        if not pending and all(gold_built_after(instance, mart, silver_done) for mart in marts):
            return [r for r in gold if r.end_time and r.end_time >= silver_done]
        time.sleep(2)
    raise AssertionError(f"gold was not rebuilt from the backfilled silver within {timeout_s} s: "
                         f"{[(r.dagster_run.run_id[:8], r.dagster_run.status.value) for r in gold]}")


def wait_until_ingested(settings: Settings, timeout_s: float = 180) -> int:
    """Every trade file the sidecar landed is in ops.ingested_files (the streaming runs took it); returns the count."""
    deadline = time.monotonic() + timeout_s
    while True:
        landed = {f.relative for f in landing_files.list_files(settings.landing_dir, channels=("trade",))}
        with lake.session(settings, read_only=True) as con:
            ingested = {r[0] for r in con.execute("SELECT file FROM ops.ingested_files").fetchall()}
        if landed <= ingested:
            return len(landed)
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(landed - ingested)} of {len(landed)} landed files never ingested")
        time.sleep(1)


def lock_mentions(instance: dg.DagsterInstance, run_ids: list[str]) -> tuple[int, int, list[str]]:
    """(lost-race retries lake.write logged, gold builds retried after a lost race, lock or conflict messages that are
    neither) over the runs' event logs."""
    retries, step_retries, unretried = 0, 0, []
    for run_id in run_ids:
        for entry in instance.all_logs(run_id):
            texts = [entry.user_message or ""]
            event = entry.dagster_event
            if event is not None and event.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY:
                step_retries += 1  # the dbt build whose commit lost a race, run again (defs/gold/assets.py)
                continue
            if event is not None and event.event_specific_data is not None:
                error = getattr(event.event_specific_data, "error", None)
                if error is not None:
                    texts.append(error.to_string())
            for text in texts:
                if text.startswith(RETRY_LOG):
                    retries += 1
                elif LOCK_OR_CONFLICT.search(text):
                    unretried.append(f"{run_id[:8]}: {text[:300]}")
    return retries, step_retries, unretried


def assert_stream_matches_ground_truth(sim, settings: Settings, exchange: str, market: str) -> int:
    with lake.session(settings, read_only=True) as con:
        rows = con.execute("SELECT trade_id, epoch_ms(ts), price, volume, side FROM silver.trades "
                           "WHERE exchange = ? AND market = ? ORDER BY trade_id", [exchange, market]).fetchall()
    assert rows, f"nothing streamed for {exchange}:{market}"
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids)), f"duplicated trades in silver for {exchange}:{market}"
    truth = sim.ground_truth(market, min(r[1] for r in rows), max(r[1] for r in rows) + 1, exchange=exchange)
    key = "sequential_id" if exchange == "upbit" else "trade_id"
    expected = {t[key]: (t["ts"], t["price"], t["volume"], t["side"]) for t in truth}
    got = {r[0]: tuple(r[1:]) for r in rows}
    lost = sorted(set(expected) - set(got))
    assert not lost, f"{exchange}:{market} lost {len(lost)} of {len(expected)} trades, e.g. {lost[:5]}"
    assert got == expected, f"{exchange}:{market}: silver differs from the trades the exchange made"
    return len(expected)


@pytest.mark.slow
# Minutes on a quiet 2-core machine; a heavily shared one (load 30+) stretches every process start-up several fold.
@pytest.mark.soak  # 7 min on 2 shared cores at load 26-30 (13 before ADR 0008 session 3): `make soak`, not make test
@pytest.mark.timeout(2400)
def test_backfill_four_runs_at_a_time_while_streaming_equals_a_serial_run(tmp_path, settings, monkeypatch):
    home = tmp_path / "platform"
    with running_sim(history_start=str(START), seed=42, trade_rate=3, upbit_markets=[UPBIT],
                     binance_symbols=[BINANCE]) as sim, Children() as children:
        port = services.free_port()
        base = {k: v for k, v in os.environ.items() if not k.startswith(("CRYPTOFLOW_", "DAGSTER_"))}
        base.update({**sim.env(), "CRYPTOFLOW_HOME": str(home), "CRYPTOFLOW_UI_PORT": str(port),
                     "CRYPTOFLOW_UPBIT_MARKETS": UPBIT, "CRYPTOFLOW_BINANCE_SYMBOLS": BINANCE,
                     "CRYPTOFLOW_BACKFILL_DAYS_PER_RUN": str(DAYS_PER_RUN)})
        platform = load_settings(base)
        env = child_env(platform, base, history_start=START)
        env.update(sim.env())  # child_env derives URLs from CRYPTOFLOW_SIM_*; the simulator's own are the same, said once
        write_instance_yaml(platform)
        prepare_instance(platform)
        with lake.session(platform) as con:
            lake.ensure_schema(con)
        web = services.start_dagster(children, env, "127.0.0.1", port, home / "logs")
        sidecar = children.start("sidecar", [sys.executable, "-m", "streaming_sensor"], env=env,
                                 log_path=home / "logs" / "sidecar.log")
        # The reference run overlaps the platform's start-up; it is over before the backfill sends a request.
        serial_reference(sim, monkeypatch)
        url = f"http://127.0.0.1:{port}"
        wait_until_loaded(url, timeout_s=300, still_running=lambda: web.process.poll() is None)

        cli = subprocess.run(
            services.cryptoflow_argv("backfill", "--start", str(START), "--end", str(END), "--poll", "2",
                                     "--timeout", "1500"),
            env=env, capture_output=True, text=True, timeout=1560, cwd=services.REPO_ROOT,
        )
        instance = dg.DagsterInstance.from_config(str(platform.dagster_home))
        records = instance.get_run_records()
        backfill_runs = [r for r in records if r.dagster_run.tags.get("dagster/backfill")]
        assert cli.returncode == 0, cli.stdout + cli.stderr
        assert cli.stdout.splitlines()[-1].endswith("succeeded")

        # 20 days at 5 per run: 4 runs, all successful, all 4 running at one time.
        assert len(backfill_runs) == DAYS // DAYS_PER_RUN
        assert {r.dagster_run.status for r in backfill_runs} == {dg.DagsterRunStatus.SUCCESS}
        # ...each running its steps in its own process (the CLI's run config), not a process per step (ADR 0008).
        assert not any(instance.all_logs(r.dagster_run.run_id, of_type=dg.DagsterEventType.STEP_WORKER_STARTING)
                       for r in backfill_runs)
        windows = [(r.start_time, r.end_time) for r in backfill_runs]
        assert max_overlap(windows) >= RUNS_AT_ONCE, windows
        first_start, last_end = min(w[0] for w in windows), max(w[1] for w in windows)

        gold_runs = wait_for_gold_after(instance, last_end)
        assert {r.dagster_run.status for r in gold_runs} == {dg.DagsterRunStatus.SUCCESS}

        # The stream kept flowing during the backfill: streaming runs ingested while the backfill ran, and nothing was lost.
        assert sidecar.process.poll() is None, (home / "logs" / "sidecar.log").read_text()[-2000:]
        sidecar.process.send_signal(signal.SIGTERM)  # a clean stop flushes what the sidecar buffered
        assert sidecar.process.wait(60) == 0
        beat = read_heartbeat(platform.heartbeat_path)
        assert beat["counters"]["messages"] > 0 and beat["counters"]["malformed"] == 0
        files = wait_until_ingested(platform)
        records = instance.get_run_records()
        streaming = [r for r in records if r.dagster_run.job_name == "streaming_ingest"]
        assert any(r.start_time and r.start_time < last_end and (r.end_time or time.time()) > first_start
                   for r in streaming), "no streaming run ran during the backfill"
        streamed = {f"{e}:{m}": assert_stream_matches_ground_truth(sim, platform, e, m) for e, m in MARKETS}

        # Every run that wrote the lake succeeded (backfill, gold, streaming), and no run of the platform logged a lock or
        # conflict error that was not a retried lost race.
        writers = [r for r in records if r.dagster_run.status not in IN_FLIGHT
                   and (r.dagster_run.tags.get("dagster/backfill") or is_gold_run(r) or r in streaming)]
        failed = [(r.dagster_run.job_name, r.dagster_run.status.value) for r in writers
                  if r.dagster_run.status != dg.DagsterRunStatus.SUCCESS]
        assert failed == []
        retries, step_retries, unretried = lock_mentions(instance, [r.dagster_run.run_id for r in records])
        assert unretried == [], "\n".join(unretried[:20])
        instance.dispose()

    # Row for row, the concurrent lake equals the serial one.
    for table in COMPARED:
        concurrent, serial = table_rows(platform, table), table_rows(settings, table)
        assert concurrent == serial, f"{table}: {len(concurrent)} rows concurrently, {len(serial)} serially"
    assert len(table_rows(settings, "silver.candles_1m")) > DAYS * 1000  # real minutes, both markets
    assert len(table_rows(settings, "gold.volatility_daily")) == DAYS * len(MARKETS)
    together = min(w[1] for w in windows) - max(w[0] for w in windows)  # how long all of them ran at once
    print(f"\nconcurrency backfill: {len(backfill_runs)} runs, peak {max_overlap(windows)} at once "
          f"(all {len(windows)} for {together:.0f} s), backfill wall "
          f"{last_end - first_start:.0f} s, {retries} lost-race retries, {step_retries} gold builds retried, "
          f"{files} landed files ingested, streamed trades {streamed}, load {os.getloadavg()[0]:.1f}")


def test_days_per_run_setting_sets_the_backfill_policy_and_refuses_zero():
    """The policy is read when the code location loads, as the code server does: a fresh interpreter with the setting."""
    code = ("from cryptoflow_dagster.definitions import defs; "
            "print(defs().get_assets_def(['silver', 'candles_1m']).backfill_policy.max_partitions_per_run)")
    for value, expected in (("5", "5"), (None, "31")):
        env = {k: v for k, v in os.environ.items() if k != "CRYPTOFLOW_BACKFILL_DAYS_PER_RUN"}
        if value:
            env["CRYPTOFLOW_BACKFILL_DAYS_PER_RUN"] = value
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        assert done.stdout.strip() == expected, done.stderr[-2000:]
    from cryptoflow_core.settings import SettingsError

    with pytest.raises(SettingsError, match="CRYPTOFLOW_BACKFILL_DAYS_PER_RUN"):
        load_settings({"CRYPTOFLOW_BACKFILL_DAYS_PER_RUN": "0"})


def test_sqlite_catalog_runs_in_wal_mode_and_readers_pass_a_held_write_lock(settings):
    """WAL is what keeps readers (and the snapshot lookup that starts every DuckLake transaction) working while another
    process holds the catalog's write lock."""
    import sqlite3

    with lake.session(settings) as con:
        lake.ensure_schema(con)
    catalog = settings.lake_dir / "catalog.sqlite"
    locker = sqlite3.connect(catalog, timeout=0, isolation_level=None)
    assert locker.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    # What a committing writer in another process holds; in rollback-journal mode it would lock this reader out.
    locker.execute("BEGIN EXCLUSIVE")
    try:
        reader = subprocess.run(
            [sys.executable, "-c", "from cryptoflow_dagster import lake\n"
             "with lake.session(read_only=True) as con:\n"
             "    print(con.execute('SELECT count(*) FROM silver.trades').fetchone()[0])"],
            env=os.environ.copy(), capture_output=True, text=True, timeout=120)
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert reader.returncode == 0 and reader.stdout.strip() == "0", reader.stderr[-2000:]
