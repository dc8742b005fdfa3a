"""Outbox delivery against a local Slack-compatible server over real HTTP: outages, rate limits, permanent errors,
restarts mid-delivery, no token, and the token never leaving the Authorization header."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from cryptoflow_dagster import lake
from cryptoflow_dagster.alerting import in_flight, outbox
from cryptoflow_dagster.alerting.delivery import deliver_pending, post_then_record
from cryptoflow_dagster.alerting.model import SENT, Alert
from cryptoflow_dagster.alerting.slack import SLACK_DEFAULT_API_URL, SlackPoster, make_poster

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
TOKEN = "xoxb-1111-2222-NotARealTokenButShaped"


def sample(n: int, **extra) -> list[Alert]:
    return [
        Alert(rule="price_move", exchange="upbit", market="KRW-BTC", event_time=NOW + timedelta(minutes=20 * i),
              triggered_at=NOW, value=4.0 + i, threshold=2.0, message=f"KRW-BTC moved {4 + i}%",
              dedupe_key=f"price_move:upbit:KRW-BTC:{i}", cooldown_s=600,
              details={"title": "price move: upbit KRW-BTC", "fields": {"Move": f"+{4 + i}%"},
                       "link": "/assets/silver/trades"}, **extra)
        for i in range(n)
    ]


def statuses(con) -> dict[str, tuple]:
    rows = con.execute("SELECT alert_id, status, attempts, last_error, delivered_at, next_attempt_at FROM gold.alerts").fetchall()
    return {r[0]: r[1:] for r in rows}


def posted_ids(server) -> list[str]:
    return [c.body["metadata"]["event_payload"]["alert_id"] for c in server.posts]


@pytest.fixture
def con(settings):
    with lake.session(settings) as c:
        lake.ensure_schema(c)
        yield c


@pytest.fixture
def recorded(con):
    return outbox.record(con, sample(3))


def test_outage_delays_but_neither_loses_nor_doubles(settings, con, slack_server, recorded):
    slack_server.fail_next(2, status=500)
    poster = SlackPoster(TOKEN, slack_server.url, "#alerts")
    now = NOW
    for _ in range(8):  # each pass is a fresh process's view: a new lake connection
        with lake.session(settings) as fresh:
            deliver_pending(fresh, poster, "http://ui.test", now=now)
        if all(s[0] == "sent" for s in statuses(con).values()):
            break
        now += timedelta(minutes=10)
    assert sorted(posted_ids(slack_server)) == sorted(a.alert_id for a in recorded)  # each exactly once
    assert [c.status for c in slack_server.calls] == [500] * 2 + [200] * 3
    first = statuses(con)[recorded[0].alert_id]
    assert first[0] == "sent" and first[1] == 3 and first[2] is None and first[3] is not None
    # Nothing is posted again once sent, however often delivery runs.
    report = deliver_pending(con, poster, now=now + timedelta(hours=1))
    assert report.sent == [] and len(slack_server.posts) == 3


def test_backoff_waits_between_attempts(con, slack_server, recorded):
    slack_server.fail_next(1, status=503)
    poster = SlackPoster(TOKEN, slack_server.url, "#alerts")
    report = deliver_pending(con, poster, now=NOW)
    assert report.retry_later == [recorded[0].alert_id] and report.sent == []
    status, attempts, error, _, next_at = statuses(con)[recorded[0].alert_id]
    assert (status, attempts) == ("pending", 1) and error.startswith("HTTP 503")
    assert next_at >= NOW + timedelta(seconds=2)
    # Its retry is not due yet (the others, never tried, go ahead).
    deliver_pending(con, poster, now=NOW + timedelta(seconds=1))
    assert posted_ids(slack_server) == [a.alert_id for a in recorded[1:]]
    deliver_pending(con, poster, now=NOW + timedelta(seconds=30))
    assert posted_ids(slack_server) == [a.alert_id for a in recorded[1:] + recorded[:1]]
    assert statuses(con)[recorded[0].alert_id][:2] == ("sent", 2)


def test_rate_limit_honours_retry_after(con, slack_server, recorded):
    slack_server.rate_limit_next(1, retry_after_s=1)
    poster = SlackPoster(TOKEN, slack_server.url, "#alerts")
    report = deliver_pending(con, poster, now=NOW)
    assert len(report.sent) == 3
    first, retry = slack_server.calls[0], slack_server.calls[1]
    assert first.status == 429 and retry.status == 200 and retry.body == first.body
    assert retry.at - first.at >= 0.9  # waited as Slack asked before the retry
    # A Retry-After longer than the pass's budget: the alert waits in pending until then, nothing is sent early.
    outbox.record(con, sample(4)[3:])
    slack_server.rate_limit_next(1, retry_after_s=120)
    deliver_pending(con, poster, now=NOW)
    deliver_pending(con, poster, now=NOW + timedelta(seconds=60))
    assert len(slack_server.calls) == 5
    deliver_pending(con, poster, now=NOW + timedelta(seconds=125))
    assert len(slack_server.posts) == 4 and len(set(posted_ids(slack_server))) == 4


def test_gives_up_after_max_attempts_and_on_permanent_errors(con, slack_server, recorded):
    poster = SlackPoster(TOKEN, slack_server.url, "#alerts")
    slack_server.fail_next(3, status=502)
    now = NOW
    for _ in range(3):
        deliver_pending(con, poster, now=now, max_attempts=3)
        now += timedelta(minutes=10)
    first = statuses(con)[recorded[0].alert_id]
    assert first[:2] == ("failed", 3) and first[2].startswith("HTTP 502") and first[3] is None
    # A 4xx is not Slack being down: failed at once with the error, and the other alerts still go out.
    outbox.record(con, sample(4)[3:])
    slack_server.fail_next(1, status=404)
    deliver_pending(con, poster, now=now)
    final = statuses(con)
    assert sorted(s[0] for s in final.values()) == ["failed", "failed", "sent", "sent"]
    assert any(s[2] and s[2].startswith("HTTP 404") for s in final.values())


def test_restart_mid_post_never_doubles_and_is_not_forgotten(settings, con, slack_server, recorded):
    poster = SlackPoster(TOKEN, slack_server.url, "#alerts")
    # A sender claimed the first alert and stopped before settling it (killed between claim and the answer).
    assert outbox.claim(con, recorded[0].alert_id, NOW, lease_s=120)
    with lake.session(settings) as fresh:  # the restarted process
        report = deliver_pending(fresh, poster, now=NOW + timedelta(seconds=30))
        assert report.expired_claims == 0 and len(report.sent) == 2  # the lease still runs: left alone
        report = deliver_pending(fresh, poster, now=NOW + timedelta(seconds=300))
    assert report.expired_claims == 1
    first = statuses(con)[recorded[0].alert_id]
    assert first[0] == "failed" and "outcome unknown" in first[2]
    assert recorded[0].alert_id not in posted_ids(slack_server)


def _commits(con) -> int:
    return con.execute("SELECT max(snapshot_id) FROM lake.snapshots()").fetchone()[0]


def test_market_alerts_reach_slack_while_another_writer_holds_the_lake_and_are_recorded_in_one_commit_after(
        settings, con, slack_server, tmp_path):
    """The market alert sensor's path: a lake commit waits for the writers' turn (behind a streaming chunk, seconds at
    250 markets), so the posts go first: they reach Slack while another writer holds the turn, and the alerts are
    recorded, sent, in one commit once it lets go."""
    poster = SlackPoster(TOKEN, slack_server.url, "#alerts")
    in_flight_file = tmp_path / "in-flight.json"
    before = _commits(con)
    result: list = []
    # another process holds the writers' turn (the streaming run's chunk, as long as it takes) until told to let go
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom cryptoflow_dagster import lake\nwith lake.session() as c:\n"
         "    with lake.writer_turn(c):\n        print('held', flush=True)\n        sys.stdin.readline()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        worker = threading.Thread(target=lambda: result.append(
            post_then_record(con, poster, sample(3), in_flight_file, "http://ui.test")))
        worker.start()
        deadline = time.monotonic() + 30
        while len(slack_server.posts) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(slack_server.posts) == 3, "the posts must not wait for the writers' turn"
        time.sleep(0.5)
        assert worker.is_alive() and in_flight_file.exists()  # the record waits for the turn; the file holds them
        holder.communicate("go\n", timeout=30)
    finally:
        holder.kill()
        holder.wait()
    worker.join(30)
    [(alerts, report)] = result
    assert sorted(report.sent) == sorted(a.alert_id for a in alerts) and len(alerts) == 3
    assert _commits(con) == before + 1 and not in_flight_file.exists()
    assert posted_ids(slack_server) == [a.alert_id for a in alerts]
    assert {s[:2] for s in statuses(con).values()} == {("sent", 1)} and all(s[3] for s in statuses(con).values())
    assert "<http://ui.test/assets/silver/trades|Open in Dagster>" in json.dumps(slack_server.posts[0].body["blocks"])
    # recorded: neither the delivery sensor nor the same alerts evaluated again post them twice
    assert deliver_pending(con, poster, now=NOW + timedelta(hours=1)).sent == []
    assert post_then_record(con, poster, sample(3), in_flight_file)[0] == [] and len(slack_server.posts) == 3


def test_market_alerts_slack_cannot_take_are_recorded_pending_and_go_out_once(con, slack_server, tmp_path):
    poster = SlackPoster(TOKEN, slack_server.url, "#alerts")
    slack_server.fail_next(1, status=503)
    alerts, report = post_then_record(con, poster, sample(3), tmp_path / "in-flight.json")
    assert report.sent == [] and len(report.retry_later) == 3 and len(slack_server.calls) == 1  # not tried further
    rows = statuses(con)
    first = rows[alerts[0].alert_id]
    assert first[:2] == ("pending", 1) and first[2].startswith("HTTP 503") and first[4] is not None
    assert [rows[a.alert_id][:2] for a in alerts[1:]] == [("pending", 0)] * 2  # never tried: no attempt counted
    deliver_pending(con, poster, now=datetime.now(timezone.utc) + timedelta(minutes=1))
    assert sorted(posted_ids(slack_server)) == sorted(a.alert_id for a in alerts)  # each exactly once
    assert {s[0] for s in statuses(con).values()} == {"sent"}


@pytest.mark.parametrize("stopped", ["before the post", "after the post"])
def test_a_market_alert_sensor_stopped_between_its_post_and_its_record_loses_and_doubles_nothing(
        settings, con, slack_server, tmp_path, stopped):
    """The sensor stopped with alerts in flight (the file written before the post, and again with the outcomes after):
    its next batch records them. With outcomes: as they ended (sent, never posted again). Without: Slack may or may
    not have them, so failed "outcome unknown", never posted (a second post could double the message)."""
    poster = SlackPoster(TOKEN, slack_server.url, "#alerts")
    in_flight_file = tmp_path / "in-flight.json"
    alerts = sample(2)
    in_flight.write(in_flight_file, alerts)
    if stopped == "after the post":
        in_flight.write(in_flight_file, alerts, [outbox.Settled(a.alert_id, SENT) for a in alerts])
    with lake.session(settings) as restarted:
        assert post_then_record(restarted, poster, [], in_flight_file)[0] == []
        recovered = in_flight.recover(restarted, in_flight_file)
        assert [a.alert_id for a in recovered] == [a.alert_id for a in alerts] and not in_flight_file.exists()
        # the same shock evaluated again by the next tick: already recorded, not posted
        assert post_then_record(restarted, poster, alerts, in_flight_file)[0] == []
        deliver_pending(restarted, poster, now=datetime.now(timezone.utc) + timedelta(minutes=10))
    assert slack_server.posts == []
    rows = statuses(con)
    if stopped == "after the post":
        assert {rows[a.alert_id][:2] for a in alerts} == {("sent", 1)}
    else:
        assert {rows[a.alert_id][0] for a in alerts} == {"failed"}
        assert all("outcome unknown" in rows[a.alert_id][2] for a in alerts)
    assert [r["message"] for r in outbox.rows_of(recovered)] == [a.message for a in alerts]
    assert con.execute("SELECT details_json FROM gold.alerts ORDER BY event_time").fetchone()[0] == \
        json.dumps(alerts[0].details, sort_keys=True)


def test_without_a_token_alerts_stay_pending_but_a_local_sink_receives(con, slack_server, recorded):
    assert make_poster(None, SLACK_DEFAULT_API_URL, "#alerts") is None
    report = deliver_pending(con, None, now=NOW)
    assert report.skipped_reason and report.sent == []
    assert {s[0] for s in statuses(con).values()} == {"pending"}
    deliver_pending(con, make_poster(None, slack_server.url, "#alerts"), now=NOW)
    assert len(slack_server.posts) == 3 and slack_server.posts[0].authorization == "Bearer xoxb-local-sink"


def test_block_kit_message_links_to_the_ui(con, slack_server, recorded):
    poster = SlackPoster(TOKEN, slack_server.url, "#alerts")
    deliver_pending(con, poster, "http://dagster.example:3000", now=NOW)
    body = slack_server.posts[0].body
    assert body["channel"] == "#alerts" and "KRW-BTC moved 4%" in body["text"]
    types = [b["type"] for b in body["blocks"]]
    assert types[0] == "header" and "section" in types and types[-1] == "context"
    assert "<http://dagster.example:3000/assets/silver/trades|Open in Dagster>" in json.dumps(body["blocks"])


def test_token_never_in_messages_or_logs(con, slack_server, monkeypatch, caplog):
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    caplog.set_level(logging.DEBUG)
    leaky = Alert(rule="check_failed", triggered_at=NOW, message=f"check metadata said auth={TOKEN}",
                  dedupe_key="leak", details={"fields": {"config": f"token {TOKEN}"}})
    outbox.record(con, [leaky] + sample(1))
    poster = SlackPoster(TOKEN, slack_server.url, "#alerts")
    slack_server.fail_next(1, status=500)
    deliver_pending(con, poster, now=NOW)
    deliver_pending(con, poster, now=NOW + timedelta(minutes=5))
    assert len(slack_server.posts) == 2
    for call in slack_server.calls:
        assert TOKEN not in call.raw.decode()
        assert call.authorization == f"Bearer {TOKEN}"  # where it belongs, and only there
    (leak_post,) = [c for c in slack_server.posts if c.body["metadata"]["event_payload"]["rule"] == "check_failed"]
    assert "[redacted]" in leak_post.body["text"] and "[redacted]" in json.dumps(leak_post.body["blocks"])
    # nor is it stored in the outbox
    stored = con.execute("SELECT message || details_json FROM gold.alerts WHERE dedupe_key = 'leak'").fetchone()[0]
    assert TOKEN not in stored and "[redacted]" in stored
    assert caplog.records and all(TOKEN not in r.getMessage() for r in caplog.records)
    assert TOKEN not in caplog.text


def test_a_repeat_is_not_posted_when_a_read_misses_the_alert_this_process_posted(con, slack_server, tmp_path):
    """The check before a post reads gold.alerts outside the writers' turn, and such a read can miss rows for a moment
    while maintenance flushes inlined rows (DuckLake; measured in an endurance run: a repeat inside the cooldown was
    posted). What this process posted lately counts as recorded whatever the read shows: here the rows are gone from
    the table (deleted, as the read would not see them), and neither the same alert nor a repeat inside the cooldown
    goes out again; without the memory both would."""
    poster = SlackPoster(TOKEN, slack_server.url, "#alerts")
    recent = in_flight.RecentlyPosted()
    first = sample(1)
    post_then_record(con, poster, first, tmp_path / "f.json", recently_posted=recent)
    lake.write(con, lambda c: c.execute("DELETE FROM gold.alerts"))
    repeat = Alert(rule="price_move", exchange="upbit", market="KRW-BTC", event_time=NOW + timedelta(minutes=5),
                   triggered_at=NOW, value=5.0, threshold=2.0, message="KRW-BTC moved 5%",
                   dedupe_key="price_move:upbit:KRW-BTC:later", cooldown_s=600)
    assert post_then_record(con, poster, first + [repeat], tmp_path / "f.json", recently_posted=recent)[0] == []
    assert len(slack_server.posts) == 1
    assert [a.dedupe_key for a in post_then_record(con, poster, first + [repeat], tmp_path / "f.json")[0]] == [
        first[0].dedupe_key]  # without what it posted: the read alone lets the repeat's earlier twin go again


def test_an_unreadable_in_flight_file_is_kept_aside_and_the_sensor_goes_on(con, slack_server, tmp_path, caplog):
    """The file is written atomically, so only a hand breaks it: it is moved aside with an error that says where, and
    alerting goes on (a broken file must not stop every later batch)."""
    in_flight_file = tmp_path / "in-flight.json"
    in_flight_file.write_text('{"alerts": [{"rule": ', encoding="utf-8")
    with caplog.at_level(logging.ERROR, logger="cryptoflow_dagster.alerting.in_flight"):
        assert in_flight.recover(con, in_flight_file) == []
    [kept] = tmp_path.glob("in-flight.json.unreadable-*")
    assert kept.read_text(encoding="utf-8") == '{"alerts": [{"rule": ' and not in_flight_file.exists()
    assert str(kept) in caplog.text
    poster = SlackPoster(TOKEN, slack_server.url, "#alerts")
    assert len(post_then_record(con, poster, sample(1), in_flight_file)[0]) == 1 and len(slack_server.posts) == 1
