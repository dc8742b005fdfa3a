"""The chaos run's end checks, each against a ground truth the platform did not write: the simulator's trades, its record
of the malformed frames it sent (and how each WebSocket connection ended), and the Slack sink's messages.

Each check fills its part of the report and returns the failures it found (empty when it passed).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timezone

import duckdb

from exchange_sim.faults import malformed_serial

# How long after a SIGKILL the simulator may notice the client is gone (it sees EOF at once on loopback; slack for a
# loaded machine). A connection that ended later than this after every kill was not ended by one.
KILL_NOTICE_MS = 5_000
# A frame lost with a killed sidecar was received after its last flush began: it must be younger, at the kill, than
# one flush interval plus this slack (a flush of a loaded machine, Parquet encoding in a thread). Older means the
# sidecar had stopped flushing, which is a failure, not the expected loss.
LOSS_WINDOW_SLACK_MS = 10_000
# 1005 (no status) or 1006 (abnormal): the client's socket closed without a close frame, i.e. the process died.
VANISHED_CODES = (1005, 1006)
MARKET_RULES = ("price_move", "volume_spike", "volatility", "kimchi_premium")


def check_trades(con: duckdb.DuckDBPyConnection, sim, markets: list[tuple[str, str]], report) -> list[str]:
    """silver.trades equals the simulator's trades over the span silver holds, per market: lost 0, duplicated 0,
    extra 0."""
    failures = []
    for exchange, market in markets:
        rows = con.execute("SELECT trade_id, epoch_ms(ts) FROM silver.trades WHERE exchange = ? AND market = ?",
                           [exchange, market]).fetchall()
        ids = [r[0] for r in rows]
        entry = {"silver": len(ids), "duplicated": len(ids) - len(set(ids)), "truth": 0, "lost": None, "extra": None}
        if rows:
            start, end = min(r[1] for r in rows), max(r[1] for r in rows)
            key = "sequential_id" if exchange == "upbit" else "trade_id"
            truth = {t[key] for t in sim.ground_truth(market, start, end + 1, exchange=exchange)}
            entry.update(truth=len(truth), lost=len(truth - set(ids)), extra=len(set(ids) - truth))
        report.markets[f"{exchange}:{market}"] = entry
        if not rows or entry["lost"] or entry["duplicated"] or entry["extra"]:
            failures.append(f"{exchange}:{market} differs from ground truth: {entry}")
    return failures


def _killed_by(conn: dict, kills_ms: list[int]) -> int | None:
    """The kill (epoch ms) that ended this connection, if the client vanished within KILL_NOTICE_MS after one."""
    if conn["closed_by"] != "client" or conn["close_code"] not in VANISHED_CODES or conn["ended_ms"] is None:
        return None
    for kill in kills_ms:
        if kill <= conn["ended_ms"] <= kill + KILL_NOTICE_MS:
            return kill
    return None


def check_dead_letters(con: duckdb.DuckDBPyConnection, ledger: dict, kills_ms: list[int], flush_interval_s: float,
                       report) -> list[str]:
    """bronze.dead_letters holds exactly the malformed frames the simulator sent, once each, per exchange.

    Every malformed frame carries a serial (exchange_sim.faults.malformed_frame), so the comparison is frame by frame:
    a dead letter without a serial (a drifted or duplicated trade, anything else), with a serial the simulator never
    sent, of the wrong exchange, or twice, fails; a frame sent and never dead-lettered fails unless it was lost with a
    SIGKILLed sidecar, which is exactly: its connection ended with the client vanishing (no close frame) right after a
    recorded kill, no later malformed frame of that connection reached the lake (a sidecar lands what it reads in
    order, so the loss is the tail it had not flushed yet), and it was sent within a flush interval (+ slack) before
    the kill. Frames whose send was cut off by a closing connection (the simulator cannot know whether they left) may
    be either, and are counted apart.
    """
    failures: list[str] = []
    frames = {f["serial"]: f for f in ledger["frames"]}
    connections = {int(k): v for k, v in ledger["connections"].items()}
    dead = con.execute("SELECT raw, error, exchange FROM bronze.dead_letters").fetchall()
    serials = Counter()
    not_malformed: list[str] = []
    for raw, error, exchange in dead:
        serial = malformed_serial(bytes(raw or b""))
        if serial is None:
            not_malformed.append(f"{exchange}: {error}: {bytes(raw or b'')[:80]!r}")
            continue
        serials[serial] += 1
        sent = frames.get(serial)
        if sent is None:
            failures.append(f"dead letter with serial {serial} the simulator never sent")
        elif sent["exchange"] != exchange:
            failures.append(f"malformed frame {serial} sent on {sent['exchange']} became a {exchange} dead letter")
    if not_malformed:
        failures.append(f"{len(not_malformed)} dead letters are not malformed frames, e.g. {not_malformed[:3]}")
    twice = {s: n for s, n in serials.items() if n > 1}
    if twice:
        failures.append(f"{len(twice)} malformed frames dead-lettered more than once: {dict(list(twice.items())[:5])}")

    last_landed: dict[int, int] = defaultdict(int)  # connection -> highest serial that reached the lake
    for serial in serials:
        if serial in frames:
            conn = frames[serial]["connection"]
            last_landed[conn] = max(last_landed[conn], serial)
    window_ms = flush_interval_s * 1000 + LOSS_WINDOW_SLACK_MS
    per_exchange: dict[str, dict] = defaultdict(lambda: {"sent": 0, "expected": 0, "found": 0,
                                                         "lost_with_killed_sidecar": 0, "cut_off_sends": 0,
                                                         "cut_off_landed": 0})
    lost: list[dict] = []
    for serial, f in sorted(frames.items()):
        counts = per_exchange[f["exchange"]]
        landed = serial in serials
        if f["sent_at_ms"] is None:
            counts["cut_off_sends"] += 1
            counts["cut_off_landed"] += landed
            continue
        counts["sent"] += 1
        if landed:
            continue
        conn = connections[f["connection"]]
        kill = _killed_by(conn, kills_ms)
        if kill is not None and serial > last_landed[f["connection"]] and kill - window_ms <= f["sent_at_ms"] <= conn["ended_ms"]:
            counts["lost_with_killed_sidecar"] += 1
            lost.append({"serial": serial, "exchange": f["exchange"], "connection": f["connection"],
                         "sent_before_kill_s": round((kill - f["sent_at_ms"]) / 1000, 2)})
        else:
            failures.append(f"malformed frame {serial} ({f['exchange']}, connection {f['connection']} ended "
                            f"{conn['closed_by']} {conn['close_code']}) was sent and is not a dead letter")
    for exchange in {e for _, _, e in dead if e} | set(per_exchange):
        counts = per_exchange[exchange]
        counts["found"] = sum(1 for _, _, e in dead if e == exchange)
        counts["expected"] = counts["sent"] - counts["lost_with_killed_sidecar"] + counts["cut_off_landed"]
        if counts["found"] != counts["expected"]:
            failures.append(f"{exchange}: {counts['found']} dead letters, {counts['expected']} expected: {counts}")
    report.dead_letters = {e: dict(c) for e, c in sorted(per_exchange.items())}
    report.dead_letters_lost_with_kills = lost
    if not serials:
        failures.append("no malformed frame reached the dead letters (1 % of frames are malformed)")
    return failures


def _alert_id_of(message: dict) -> str | None:
    payload = (message.get("metadata") or {}).get("event_payload") or {}
    return payload.get("alert_id")


def check_alerts(con: duckdb.DuckDBPyConnection, slack_messages: list[dict], shock: tuple[str, str, int] | None,
                 report) -> list[str]:
    """Every alert delivered exactly once, checked on the Slack sink by dedupe key: each message is an alert of
    gold.alerts, no dedupe key reached Slack twice, every alert row is 'sent' and in Slack, and the price shock's
    alert is among them."""
    failures: list[str] = []
    rows = con.execute("SELECT alert_id, dedupe_key, rule, exchange, market, epoch_ms(event_time), status "
                       "FROM gold.alerts").fetchall()
    by_id = {r[0]: r for r in rows}
    keys = Counter(r[1] for r in rows)
    if any(n > 1 for n in keys.values()):
        failures.append(f"gold.alerts holds a dedupe key twice: {[k for k, n in keys.items() if n > 1][:5]}")
    delivered = Counter()
    strangers = 0
    for message in slack_messages:
        alert_id = _alert_id_of(message)
        if alert_id not in by_id:
            strangers += 1
            continue
        delivered[by_id[alert_id][1]] += 1
    statuses = Counter(r[6] for r in rows)
    report.alerts = {"raised": len(rows), "by_rule": dict(Counter(r[2] for r in rows)), "by_status": dict(statuses),
                     "slack_messages": len(slack_messages), "delivered_keys": len(delivered),
                     "delivered_twice": sum(1 for n in delivered.values() if n > 1), "slack_not_an_alert": strangers,
                     "shock_alert": None}
    if not rows:
        failures.append("no alert was raised (the shock and the kills should raise some)")
    if strangers:
        failures.append(f"{strangers} Slack messages are not alerts of gold.alerts")
    twice = [k for k, n in delivered.items() if n > 1]
    if twice:
        failures.append(f"{len(twice)} alerts reached Slack more than once, e.g. {twice[:3]}")
    unsent = [f"{r[1]} ({r[6]})" for r in rows if r[6] != "sent"]
    if unsent:
        failures.append(f"{len(unsent)} of {len(rows)} alerts not sent at the end: {unsent[:5]}")
    missing = [r[1] for r in rows if r[6] == "sent" and r[1] not in delivered]
    if missing:
        failures.append(f"{len(missing)} alerts marked sent are not in Slack: {missing[:5]}")
    if shock is not None:
        exchange, market, at_ms = shock
        hits = sorted((r[5], r[1]) for r in rows
                      if r[2] in MARKET_RULES and r[3] == exchange and r[4] == market and r[5] is not None and r[5] >= at_ms)
        if hits and hits[0][1] in delivered:
            report.alerts["shock_alert"] = hits[0][1]
        else:
            at = datetime.fromtimestamp(at_ms / 1000, timezone.utc).isoformat()
            failures.append(f"no market alert for the {exchange}:{market} shock at {at} reached Slack")
    return failures
