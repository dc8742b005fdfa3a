"""The batch transform bronze trades -> silver.trades -> gold (1-minute OHLCV, 24-hour stats), one engine per process.

``python -m benchmarks.batch_engines setup WORK N``  N trades from the simulator's model (4 Binance symbols, 2 UTC days)
                                                     into the lake's bronze.trades_raw, raw_json exactly as the simulator's
                                                     WebSocket sends it; the same rows exported to WORK/bronze.parquet
``python -m benchmarks.batch_engines duckdb WORK``   the platform's code: rebuild_silver_day + rebuild_gold_day per day,
                                                     replacing the days an earlier run wrote (a rebuild)
``python -m benchmarks.batch_engines duckdb_first WORK``  the same on empty silver and gold tables (a first backfill;
                                                     the tables are emptied before the clock starts)
``python -m benchmarks.batch_engines bare WORK``     the floor: the same SQL in bare DuckDB on WORK/bronze.parquet, silver
                                                     and gold written as Parquet files (no lake catalog, no transactions,
                                                     no replacement of a day's old rows, no kimchi premium)
``python -m benchmarks.batch_engines pandas WORK``   the same logic in pandas (json module per row, groupby)
``python -m benchmarks.batch_engines spark WORK``    the same logic in PySpark local[2] (from_json, window, min_by/max_by)

Every engine persists silver (the platform into the lake; the others as Parquet in WORK/out, read back for gold, as a
Spark or pandas lakehouse job would) and writes WORK/out/<engine>_{ohlcv,stats}.parquet, and prints a JSON line with its
timings; the parent compares the outputs and samples the process tree's memory. Baselines are written from the data contract (docs: silver.trades
dedupes on (exchange, market, trade_id) keeping the earliest ingest; gold bars are first/max/min/last by (ts, trade_id)).
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

SYMBOLS = ("BTCUSDT", "ETHUSDT", "XRPUSDT", "SOLUSDT")
PANDAS_JSON_CHUNK = 1_000_000  # rows decoded at a time: a dict per message for 10 M rows at once would need ~15 GiB
DAYS = 2
START = date(2026, 1, 5)  # synthetic part of the model (no recorded candles shape it)
OHLCV_KEYS = ["exchange", "market", "ts"]


def _tree_cpu_s() -> float:
    """CPU seconds of this process and its descendants (PySpark's JVM is a child of the driver): on a shared machine the
    CPU a job burns is steadier than its wall time."""
    from benchmarks.common import _children_of, proc_cpu_s

    tree, total, todo = _children_of(), 0.0, [os.getpid()]
    while todo:
        pid = todo.pop()
        try:
            total += proc_cpu_s(pid)
        except (OSError, ValueError, IndexError):
            pass
        todo += tree.get(pid, [])
    return total


def _settings(work: Path):
    from cryptoflow_core.settings import load_settings

    return load_settings({**os.environ, "CRYPTOFLOW_HOME": str(work / "home")})


def setup(work: Path, n: int) -> dict:
    import numpy as np
    import polars as pl

    from cryptoflow_dagster import lake
    from exchange_sim.binance_ws import TRADE
    from exchange_sim.model import DAY_MS, Model, ModelConfig

    start_ms = int(datetime(START.year, START.month, START.day, tzinfo=timezone.utc).timestamp() * 1000)
    per_minute = n / (len(SYMBOLS) * DAYS * 1440)
    # Every minute is "history" (live epoch after the range) at the density that makes n trades in all.
    model = Model(ModelConfig(seed=7, history_start_ms=start_ms, live_epoch_ms=start_ms + (DAYS + 1) * DAY_MS,
                              history_per_minute=per_minute))
    settings = _settings(work)
    ingest = datetime.now(timezone.utc)
    total = 0
    with lake.session(settings) as con:
        lake.ensure_schema(con)
        # One symbol-day at a time (the model's trades are the same whichever way the range is cut): at 50 M trades the
        # raw JSON strings of a whole symbol would take ~3 GiB in this process.
        for symbol in SYMBOLS:
            for day in range(DAYS):
                lo = start_ms + day * DAY_MS
                t = model.trades("binance", symbol, lo, lo + DAY_MS)
                name = symbol.lower() + "@trade"
                raw = ['{"stream":"%s","data":%s}' % (name, TRADE % (ts, symbol, i, p, v, ts, "false" if b else "true"))
                       for ts, i, p, v, b in zip(t.ts.tolist(), t.ids.tolist(), t.price.tolist(), t.volume.tolist(),
                                                 t.buy.tolist())]
                event = pl.Series("event_time", t.ts, pl.Int64).cast(pl.Datetime("ms", "UTC"))
                frame = pl.DataFrame({
                    "exchange": "binance", "market": symbol, "trade_id": t.ids.astype(np.int64), "event_time": event,
                    "raw_json": raw, "ingest_time": ingest, "ingest_run_id": "bench", "source": "ws",
                    "batch_file": "bench", "receive_time": event + timedelta(milliseconds=5), "session_id": "bench",
                }).with_columns(
                    unique_key=pl.lit("binance:") + pl.col("market") + ":" + pl.col("trade_id").cast(pl.String),
                    day=pl.col("event_time").dt.date(),
                )
                lake.write(con, lambda c, f=frame: lake.insert(c, "bronze.trades_raw", f))
                total += frame.height
                del raw, frame, t
        con.execute(f"COPY (SELECT * FROM bronze.trades_raw) TO '{work / 'bronze.parquet'}' (FORMAT parquet)")
    return {"trades": total, "per_minute": per_minute}


# What a first backfill finds: nothing in silver and intraday gold for its days. A rebuild instead replaces rows, and
# DuckLake (the 1.5.5 extension) deletes a day's rows one position at a time (DuckLakeDelete::FlushDelete, a std::set of
# row positions: ~1 s per 5 M rows), even when whole files go.
_TABLES = ("silver.trades", "gold.ohlcv_1m_from_trades", "gold.market_stats_24h", "gold.kimchi_premium_1m")


def run_duckdb(work: Path, first_build: bool = False) -> dict:
    from cryptoflow_dagster import lake
    from cryptoflow_dagster.streaming.day_rebuild import rebuild_gold_day, rebuild_silver_day
    from cryptoflow_dagster.silver_trades import with_trade_fields

    settings = _settings(work)
    t_open = time.perf_counter()
    with lake.session(settings) as con:
        # CRYPTOFLOW_DUCKDB_MEMORY_LIMIT (e.g. 3GB; lake.connect applies it) is how a deployment keeps a 50 M-trade
        # rebuild inside a memory budget; what DuckDB spills beyond it goes to WORK/spill, not .tmp in the checkout.
        con.execute("SET temp_directory = ?", [str(work / "spill")])
        lake.ensure_schema(con)  # as the assets' lake resource does on connect (it sets the lake's data file options)
        if first_build:
            lake.write(con, lambda c: [c.execute(f"DELETE FROM {table}") for table in _TABLES])
        # the catalog attach is a per-run constant, reported apart as Spark's start is
        t0, cpu0 = time.perf_counter(), _tree_cpu_s()
        days = [r[0] for r in con.execute("SELECT DISTINCT day FROM bronze.trades_raw ORDER BY day").fetchall()]
        silver = 0
        t_silver = t_gold = cpu_silver = cpu_gold = 0.0
        for day in days:
            now = datetime.now(timezone.utc)
            a, a_cpu = time.perf_counter(), time.process_time()
            silver += rebuild_silver_day(con, day, now)
            b, b_cpu = time.perf_counter(), time.process_time()
            rebuild_gold_day(con, day, now)
            t_silver, t_gold = t_silver + b - a, t_gold + time.perf_counter() - b
            cpu_silver, cpu_gold = cpu_silver + b_cpu - a_cpu, cpu_gold + time.process_time() - b_cpu
        job_s, job_cpu_s = time.perf_counter() - t0, _tree_cpu_s() - cpu0
        # The floor: only reading bronze and extracting the typed fields with the platform's own SQL, nothing written.
        a = time.perf_counter()
        con.execute(f"SELECT count(price), sum(volume) FROM ({with_trade_fields('SELECT * FROM bronze.trades_raw')})")
        floor_s = time.perf_counter() - a
        a = time.perf_counter()
        con.execute("SELECT sum(length(raw_json)) FROM bronze.trades_raw")
        scan_s = time.perf_counter() - a
        out = work / "out"
        out.mkdir(exist_ok=True)
        name = "duckdb_first" if first_build else "duckdb"
        con.execute(f"COPY (SELECT exchange, market, ts, open, high, low, close, volume, quote_volume, trade_count "
                    f"FROM gold.ohlcv_1m_from_trades) TO '{out / f'{name}_ohlcv.parquet'}' (FORMAT parquet)")
        con.execute(f"COPY (SELECT exchange, market, as_of, open_24h, high_24h, low_24h, last_price, volume_24h, "
                    f"trade_count_24h FROM gold.market_stats_24h) TO '{out / f'{name}_stats.parquet'}' (FORMAT parquet)")
    return {"job_s": job_s, "job_cpu_s": job_cpu_s, "json_extract_floor_s": floor_s, "scan_floor_s": scan_s,
            "session_open_s": t0 - t_open,
            "silver_s": t_silver, "gold_s": t_gold, "silver_cpu_s": cpu_silver, "gold_cpu_s": cpu_gold,
            "silver_rows": silver}


def run_bare(work: Path) -> dict:
    """The engine's own cost of this job: the platform's silver SQL (rebuild.silver_trades_sql) and the gold aggregates
    (with the platform's ordering key) in an in-memory DuckDB, from and to plain Parquet files (v2, as the lake writes);
    the difference from run_duckdb is what the lake costs."""
    import duckdb

    from cryptoflow_dagster.streaming.intraday_gold import TRADE_ORDER
    from cryptoflow_dagster.streaming.day_rebuild import silver_trades_sql

    out = work / "out"
    out.mkdir(exist_ok=True)
    t0, cpu0 = time.perf_counter(), _tree_cpu_s()
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    bronze = f"read_parquet('{work / 'bronze.parquet'}')"
    con.execute(f"COPY ({silver_trades_sql(bronze)}) TO '{out / 'bare_silver.parquet'}' "
                "(FORMAT parquet, PARQUET_VERSION v2)", {"now": datetime.now(timezone.utc)})
    t_silver = time.perf_counter()
    silver = f"read_parquet('{out / 'bare_silver.parquet'}') t"
    con.execute(f"""
        COPY (SELECT exchange, market, time_bucket(INTERVAL 1 MINUTE, ts) AS ts, arg_min(price, {TRADE_ORDER}) AS open,
                  max(price) AS high, min(price) AS low, arg_max(price, {TRADE_ORDER}) AS close,
                  sum(volume) AS volume, sum(quote_volume) AS quote_volume, count(*) AS trade_count
              FROM {silver} GROUP BY ALL) TO '{out / 'bare_ohlcv.parquet'}' (FORMAT parquet)""")
    con.execute(f"""
        COPY (WITH latest AS (SELECT exchange, market, max(ts) AS as_of FROM {silver} GROUP BY ALL)
              SELECT t.exchange, t.market, any_value(l.as_of) AS as_of, arg_min(price, {TRADE_ORDER}) AS open_24h,
                  max(price) AS high_24h, min(price) AS low_24h, arg_max(price, {TRADE_ORDER}) AS last_price,
                  sum(volume) AS volume_24h, count(*) AS trade_count_24h
              FROM {silver} JOIN latest l ON t.exchange = l.exchange AND t.market = l.market
              WHERE t.ts > l.as_of - INTERVAL 24 HOUR GROUP BY ALL) TO '{out / 'bare_stats.parquet'}' (FORMAT parquet)""")
    silver_rows = con.execute(f"SELECT count(*) FROM {silver}").fetchone()[0]
    job_s, job_cpu_s = time.perf_counter() - t0, _tree_cpu_s() - cpu0
    con.close()
    return {"job_s": job_s, "job_cpu_s": job_cpu_s, "silver_s": t_silver - t0, "gold_s": t0 + job_s - t_silver,
            "silver_rows": silver_rows}


def run_pandas(work: Path) -> dict:
    import pandas as pd

    t0, cpu0 = time.perf_counter(), _tree_cpu_s()
    df = pd.read_parquet(work / "bronze.parquet", columns=["exchange", "market", "trade_id", "event_time", "raw_json",
                                                            "ingest_time", "receive_time"])
    t_read = time.perf_counter()
    price, volume, side = [], [], []
    raw = df["raw_json"].tolist()
    for start in range(0, len(raw), PANDAS_JSON_CHUNK):
        data = [m.get("data", m) for m in map(json.loads, raw[start:start + PANDAS_JSON_CHUNK])]
        price += [d.get("p") for d in data]
        volume += [d.get("q") for d in data]
        side += ["sell" if d.get("m") else "buy" for d in data]
    del raw, data
    df["price"] = pd.to_numeric(price, errors="coerce")
    df["volume"] = pd.to_numeric(volume, errors="coerce")
    df["side"] = side
    del price, volume, side
    df = df.drop(columns=["raw_json"])
    df = df[df["event_time"].notna() & (df["price"] > 0) & (df["volume"] >= 0)]
    df = df.sort_values(["ingest_time", "receive_time"], kind="stable")
    silver = df.drop_duplicates(["exchange", "market", "trade_id"], keep="first").rename(columns={"event_time": "ts"})
    silver["quote_volume"] = silver["price"] * silver["volume"]
    out = work / "out"
    out.mkdir(exist_ok=True)
    silver.to_parquet(out / "pandas_silver.parquet")  # persisted, as the platform's silver is
    t_silver = time.perf_counter()
    s = silver.sort_values(["exchange", "market", "ts", "trade_id"], kind="stable")
    s["minute"] = s["ts"].dt.floor("min")
    bars = s.groupby(["exchange", "market", "minute"], sort=True).agg(
        open=("price", "first"), high=("price", "max"), low=("price", "min"), close=("price", "last"),
        volume=("volume", "sum"), quote_volume=("quote_volume", "sum"), trade_count=("price", "size"),
    ).reset_index().rename(columns={"minute": "ts"})
    as_of = s.groupby(["exchange", "market"])["ts"].transform("max")
    last24 = s[s["ts"] > as_of - pd.Timedelta(hours=24)].assign(as_of=as_of)
    stats = last24.groupby(["exchange", "market"], sort=True).agg(
        as_of=("as_of", "first"), open_24h=("price", "first"), high_24h=("price", "max"), low_24h=("price", "min"),
        last_price=("price", "last"), volume_24h=("volume", "sum"), trade_count_24h=("price", "size"),
    ).reset_index()
    bars.to_parquet(out / "pandas_ohlcv.parquet")
    stats.to_parquet(out / "pandas_stats.parquet")
    job_s, job_cpu_s = time.perf_counter() - t0, _tree_cpu_s() - cpu0
    return {"job_s": job_s, "job_cpu_s": job_cpu_s, "read_s": t_read - t0, "silver_s": t_silver - t_read, "gold_s": t0 + job_s - t_silver,
            "silver_rows": len(silver)}


def run_spark(work: Path) -> dict:
    from pyspark.sql import SparkSession, Window
    from pyspark.sql import functions as F
    from pyspark.sql.types import BooleanType, StringType, StructField, StructType

    t_start = time.perf_counter()
    spark = (SparkSession.builder.master("local[2]").appName("cryptoflow-bench")
             .config("spark.driver.memory", "3g").config("spark.sql.session.timeZone", "UTC")
             .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "8").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    t0, cpu0 = time.perf_counter(), _tree_cpu_s()
    schema = StructType([StructField("stream", StringType()), StructField("data", StructType([
        StructField("p", StringType()), StructField("q", StringType()), StructField("m", BooleanType())]))])
    df = spark.read.parquet(str(work / "bronze.parquet"))
    msg = F.from_json("raw_json", schema)
    typed = df.select("exchange", "market", "trade_id", "event_time", "ingest_time", "receive_time",
                      msg["data"]["p"].cast("double").alias("price"), msg["data"]["q"].cast("double").alias("volume"),
                      F.when(msg["data"]["m"], "sell").otherwise("buy").alias("side"))
    typed = typed.where("event_time IS NOT NULL AND price > 0 AND volume >= 0")
    first = Window.partitionBy("exchange", "market", "trade_id").orderBy("ingest_time", "receive_time")
    silver = (typed.withColumn("_n", F.row_number().over(first)).where("_n = 1").drop("_n")
              .withColumnRenamed("event_time", "ts").withColumn("quote_volume", F.col("price") * F.col("volume")))
    out = work / "out"
    # persisted and read back, as the platform's silver is (a lakehouse job writes its silver table)
    silver.write.mode("overwrite").parquet(str(out / "spark_silver.parquet"))
    silver = spark.read.parquet(str(out / "spark_silver.parquet")).cache()
    silver_rows = silver.count()
    t_silver = time.perf_counter()
    order = F.struct("ts", "trade_id")
    bars = silver.groupBy("exchange", "market", F.date_trunc("minute", "ts").alias("ts")).agg(
        F.min_by("price", order).alias("open"), F.max("price").alias("high"), F.min("price").alias("low"),
        F.max_by("price", order).alias("close"), F.sum("volume").alias("volume"),
        F.sum("quote_volume").alias("quote_volume"), F.count("*").alias("trade_count"))
    latest = silver.groupBy("exchange", "market").agg(F.max("ts").alias("as_of"))
    stats = (silver.join(latest, ["exchange", "market"]).where(F.col("ts") > F.col("as_of") - F.expr("INTERVAL 24 HOURS"))
             .groupBy("exchange", "market").agg(
                 F.first("as_of").alias("as_of"), F.min_by("price", order).alias("open_24h"),
                 F.max("price").alias("high_24h"), F.min("price").alias("low_24h"),
                 F.max_by("price", order).alias("last_price"), F.sum("volume").alias("volume_24h"),
                 F.count("*").alias("trade_count_24h")))
    bars.coalesce(1).write.mode("overwrite").parquet(str(out / "spark_ohlcv.parquet"))
    stats.coalesce(1).write.mode("overwrite").parquet(str(out / "spark_stats.parquet"))
    job_s, job_cpu_s = time.perf_counter() - t0, _tree_cpu_s() - cpu0
    spark.stop()
    return {"job_s": job_s, "job_cpu_s": job_cpu_s, "session_start_s": t0 - t_start, "silver_s": t_silver - t0, "gold_s": t0 + job_s - t_silver,
            "silver_rows": silver_rows}


def main(argv: list[str]) -> int:
    what, work = argv[0], Path(argv[1])
    if what == "setup":
        figures = setup(work, int(argv[2]))
    else:
        figures = {"duckdb": run_duckdb, "duckdb_first": lambda w: run_duckdb(w, first_build=True), "bare": run_bare,
                   "pandas": run_pandas, "spark": run_spark}[what](work)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
