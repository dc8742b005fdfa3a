"""The daily digest shows each market's latest next-day forecast (har_log) and its evaluation against naive, read from
the forecast tables in a real lake; markets without a forecast keep their line as before."""

from datetime import datetime, timedelta, timezone

import pytest
from test_alert_digest import D1, D2, write_gold

from cryptoflow_dagster import lake
from cryptoflow_dagster.alerting.digest import build_digest
from cryptoflow_dagster.forecast import lake_io
from cryptoflow_dagster.forecast.daily import DayForecasts, Forecast
from cryptoflow_dagster.forecast.evaluation import Score


@pytest.fixture
def con(settings):
    with lake.session(settings) as c:
        lake.ensure_schema(c)
        yield c


def test_digest_line_carries_the_forecast_and_its_record(con):
    write_gold(con, [D1, D2])
    now = datetime.now(timezone.utc)
    for day, variance in ((D2, 0.0004), (D2 + timedelta(days=1), 0.0009)):
        made = DayForecasts(day, [Forecast("har_log", 1, variance, D1, day - timedelta(days=1), {}),
                                  Forecast("har_log", 5, 0.01, D1, day - timedelta(days=1), {}),
                                  Forecast("naive", 1, 0.0001, day, day, {})])
        lake_io.write_forecasts(con, day, lake_io.forecast_frame("upbit", "KRW-BTC", made, now))
    scores = [Score("har_log", 1, 412, 0.4, 1e-7, 0.55, 0.6, -7.7, 0.0004, -1.2, 0.23),
              Score("har_level", 1, 412, 0.5, 1e-7, 0.9, 0.6, -1.0, 0.3, -1.2, 0.23)]
    lake_io.write_eval(con, D2, lake_io.eval_frame("upbit", "KRW-BTC", D2, scores))
    newer = [Score("har_log", 1, 413, 0.4, 1e-7, 0.54, 0.6, -7.8, 0.0003, -1.2, 0.23)]
    lake_io.write_eval(con, D2 + timedelta(days=1), lake_io.eval_frame("upbit", "KRW-BTC", D2 + timedelta(days=1), newer))

    digest = build_digest(con, D2, now)
    btc = next(line for line in digest.details["sections"] if line.startswith("*upbit KRW-BTC*"))
    # the forecast for the day after the figures (3.00% = sqrt(0.0009)), the evaluation as of the figures day (not later)
    assert f"forecast {D2 + timedelta(days=1)} 3.00% (har_log; QLIKE 0.55x naive, DM p 0.000, n 412)" in btc
    binance = next(line for line in digest.details["sections"] if line.startswith("*binance BTCUSDT*"))
    assert "forecast" not in binance

    # a day earlier: the forecast for D2, and no evaluation as of D1 yet
    earlier = build_digest(con, D1, now, failure=None)
    btc = next(line for line in earlier.details["sections"] if line.startswith("*upbit KRW-BTC*"))
    assert f"forecast {D2} 2.00% (har_log; not evaluated yet)" in btc
