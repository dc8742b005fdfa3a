"""A shortened chaos run inside `make test` (30 s; the full one is `make chaos`, 10 minutes): the real sidecar process
killed with SIGKILL and restarted, simulator disconnects, malformed, duplicated and out-of-order frames, schema drift half-way,
a Slack outage and one streaming ingest run killed mid-run; then silver must equal the simulator's ground truth, every
gap be repaired, the dead letters be exactly the malformed frames the simulator sent (frame by frame, per exchange, less
those lost with a killed sidecar's unflushed buffer) and every alert reach Slack exactly once by dedupe key."""

from __future__ import annotations

import signal

from chaos.run import MARKETS, run


def test_short_chaos_run_loses_nothing_doubles_nothing_and_delivers_every_alert_once(tmp_path):
    # 30 s of chaos; on a loaded machine the loop's ingest runs stretch it (each iteration finishes its run).
    # Malformed every 25th message, not 100th: the simulator counts per connection, and a Binance connection carrying
    # 6 trades/s lives under 8 s here (disconnects, kills), so at 1 % it would never send one.
    report = run(30.0, kill_every_s=12.0, disconnect_every_s=8.0, slack_outage_s=8.0, malformed_every=25,
                 home=tmp_path / "chaos")
    assert report.ok, report.failures
    # the chaos really happened
    assert report.sidecar_kills >= 1 and report.killed_run_exit == -signal.SIGKILL
    assert report.gaps > 0
    assert set(report.markets) == {f"{e}:{m}" for e, m in MARKETS}
    assert all(m["lost"] == 0 and m["duplicated"] == 0 and m["mismatched"] == 0 for m in report.markets.values())
    # every exchange's window held trades to compare (one Upbit market may sit in an empty minute, not all of them)
    for exchange in {e for e, _ in MARKETS}:
        assert sum(m["truth"] for name, m in report.markets.items() if name.startswith(exchange + ":")) >= 10
    # malformed frames went out on both exchanges and each one is a dead letter, or lost with a killed sidecar
    assert set(report.dead_letters) == {"upbit", "binance"}
    for counts in report.dead_letters.values():
        assert counts["sent"] > 0 and counts["found"] == counts["expected"] > 0
        assert counts["found"] == counts["sent"] - counts["lost_with_killed_sidecar"] + counts["cut_off_landed"]
    # alerts: the shock's market alert (unless no trade of the market was streamed on one side of it: an empty
    # Upbit minute, a killed sidecar) and the kills' sidecar-down alerts, each in Slack once
    alerts = report.alerts
    streamed = alerts["shock_streamed_trades"]
    assert alerts["shock_alert"] or not (streamed["before"] and streamed["after"])
    assert alerts["by_rule"].get("sidecar_down", 0) >= 1
    assert alerts["by_status"] == {"sent": alerts["raised"]} and alerts["delivered_keys"] == alerts["raised"]
    assert alerts["slack_messages"] == alerts["raised"] and alerts["delivered_twice"] == 0
