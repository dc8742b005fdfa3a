"""The chaos run's end checks, each against a ground truth the platform did not write: the simulator's trades, its record
of the malformed frames it sent (and how each WebSocket connection ended), and the Slack sink's messages.

Each check fills its part of the report and returns the failures it found (empty when it passed).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timezone

import duckdb

from exchange_sim.faults import malformed_serial

MARKET_RULES = ("price_move", "volume_spike", "volatility", "kimchi_premium")


# The streamed window's last seconds are left out of the comparison: the simulator emits a tick's trades market by
# market, so when the last sidecar stops, one market's trades of the final instant may be out and another's not yet.
END_MARGIN_MS = 2_000


def compare_trades(con: duckdb.DuckDBPyConnection, sim, markets: list[tuple[str, str]]) -> dict[str, dict]:
    """silver.trades against the simulator's trades, per market: counts of lost, extra, duplicated and mismatched rows.

    The window is the exchange's, not the market's: from the first to the last trade silver holds for any of
    ``markets`` of the exchange (one connection carries them all; give one sidecar shard's markets at a time), so a
    market whose stream was silent or lost for a while cannot shrink its own window around what it has. A quiet market
    (Upbit has empty minutes) simply has few trades, or none, to match. The window's first millisecond is left out
    too: a trade in it may have been emitted just before the connection subscribed. Silver rows outside the window
    must still be trades the exchange made, with its values.
    """
    spans = {e: con.execute("SELECT epoch_ms(min(ts)), epoch_ms(max(ts)) FROM silver.trades "
                            "WHERE exchange = ? AND list_contains(?::VARCHAR[], market)",
                            [e, [m for x, m in markets if x == e]]).fetchone() for e in {e for e, _ in markets}}
    entries = {}
    for exchange, market in markets:
        start, end = spans[exchange]
        entry = {"silver": 0, "duplicated": 0, "truth": 0, "lost": None, "extra": None, "mismatched": None,
                 "window_s": None, "lost_ids": []}
        entries[f"{exchange}:{market}"] = entry
        rows = con.execute("SELECT trade_id, epoch_ms(ts), price, volume, side FROM silver.trades "
                           "WHERE exchange = ? AND market = ?", [exchange, market]).fetchall()
        ids = [r[0] for r in rows]
        entry.update(silver=len(ids), duplicated=len(ids) - len(set(ids)))
        if start is None:
            continue
        key = "sequential_id" if exchange == "upbit" else "trade_id"
        lo = min((r[1] for r in rows), default=start)
        hi = max((r[1] for r in rows), default=end)
        truth = {t[key]: (t["ts"], t["price"], t["volume"], t["side"])
                 for t in sim.ground_truth(market, min(lo, start), max(hi, end) + 1, exchange=exchange)}
        end -= END_MARGIN_MS
        window = {i for i, (ts, *_) in truth.items() if start < ts <= end}
        got = {r[0]: tuple(r[1:]) for r in rows}
        lost = sorted(window - set(got))
        mismatched = [i for i, values in got.items() if i in truth and not _same_trade(values, truth[i])]
        entry.update(truth=len(window), lost=len(lost), lost_ids=lost[:5], extra=len(set(got) - set(truth)),
                     mismatched=len(mismatched), window_s=round((end - start) / 1000, 1))
    return entries


def _same_trade(silver: tuple, truth: tuple) -> bool:
    """(ts ms, price, volume, side): time and side exact, price and volume to 1e-12 relative (float text round trip)."""
    return (silver[0] == truth[0] and silver[3] == truth[3]
            and all(abs(a - b) <= 1e-12 * max(abs(a), abs(b)) for a, b in zip(silver[1:3], truth[1:3])))


def check_trades(con: duckdb.DuckDBPyConnection, sim, markets: list[tuple[str, str]], report) -> list[str]:
    """compare_trades into the report; a failure per market that lost, doubled, invented or altered a trade."""
    failures = []
    for name, entry in compare_trades(con, sim, markets).items():
        report.markets[name] = entry
        if entry["lost"] is None or entry["lost"] or entry["duplicated"] or entry["extra"] or entry["mismatched"]:
            failures.append(f"{name} differs from ground truth: {entry}")
    return failures


def _killed_sidecar(conn: dict, lives: list[tuple[int, int]]) -> int | None:
    """The kill (epoch ms) of the sidecar that opened this connection, if it was SIGKILLed: one sidecar runs at a
    time, so a connection opened between a sidecar's start and its kill is that sidecar's."""
    for spawned, killed in lives:
        if spawned <= conn["opened_ms"] <= killed:
            return killed
    return None


def check_dead_letters(con: duckdb.DuckDBPyConnection, ledger: dict, lives: list[tuple[int, int]], report) -> list[str]:
    """bronze.dead_letters holds exactly the malformed frames the simulator sent, once each, per exchange.

    Every malformed frame carries a serial (exchange_sim.faults.malformed_frame), so the comparison is frame by frame:
    a dead letter without a serial (a drifted or duplicated trade, anything else), with a serial the simulator never
    sent, of the wrong exchange, or twice, fails; a frame sent and never dead-lettered fails unless it was lost with a
    SIGKILLed sidecar's unflushed buffer, which is exactly: its connection was opened by a sidecar that was later
    SIGKILLed (``lives``: (start, kill) epoch ms of each killed sidecar), and no later malformed frame of the same
    connection reached the lake (a sidecar lands what one connection delivers in order, so the loss can only be that
    connection's tail: what it had not flushed, and what the simulator still wrote before it saw the socket close). Every frame sent to the last sidecar, stopped with SIGTERM, must
    land. Frames whose send was cut off by a closing connection (the simulator cannot know whether they left) may be
    either, and are counted apart.
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
        kill = _killed_sidecar(conn, lives)
        if kill is not None and serial > last_landed[f["connection"]]:
            counts["lost_with_killed_sidecar"] += 1
            lost.append({"serial": serial, "exchange": f["exchange"], "connection": f["connection"],
                         "sent_before_kill_s": round((kill - f["sent_at_ms"]) / 1000, 2)})  # < 0: after it
        else:
            failures.append(f"malformed frame {serial} ({f['exchange']}, sent at {f['sent_at_ms']} on connection "
                            f"{f['connection']}: {conn}) is not a dead letter; killed sidecars {lives}")
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
        # Market alerts are evaluated on streamed (landed) trades only: the shock can raise one when the sidecar landed
        # trades of the market both before it (the window the move is measured against) and after it. Upbit has empty
        # minutes, and a shock may fall in a sidecar's downtime (its trades then come back by gap repair, unalerted).
        before, after = con.execute(
            "SELECT count(*) FILTER (WHERE epoch_ms(event_time) < $at), count(*) FILTER (WHERE epoch_ms(event_time) >= $at) "
            "FROM bronze.trades_raw WHERE exchange = $e AND market = $m AND batch_file IS NOT NULL",
            {"at": at_ms, "e": exchange, "m": market}).fetchone()
        report.alerts["shock_streamed_trades"] = {"before": before, "after": after}
        if hits and hits[0][1] in delivered:
            report.alerts["shock_alert"] = hits[0][1]
        elif before and after:
            at = datetime.fromtimestamp(at_ms / 1000, timezone.utc).isoformat()
            failures.append(f"no market alert for the {exchange}:{market} shock at {at} reached Slack "
                            f"({before} trades streamed before it, {after} after)")
    return failures
