"""The rate limiters against the simulator's real limits over HTTP (Upbit: 10 requests/s per group per address, a
sliding one-second window, 429 then 418), and the Binance weight pacing on a fake clock.

The Upbit limiter frees a slot one second after its request's answer came back: the latest moment the server can
have counted it. That lets a backfill run at the server's limit (the window full) without a single 429.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from cryptoflow_dagster.batch.collect import collect_days, fetch_candles
from cryptoflow_dagster.clients import BinanceClient, UpbitClient
from cryptoflow_dagster.clients.ratelimit import Ticket, UpbitLimiter, WeightLimiter

TODAY = datetime.now(timezone.utc).date()
DAYS = [TODAY - timedelta(days=3), TODAY - timedelta(days=2)]
MARKETS = [("upbit", "KRW-BTC"), ("upbit", "KRW-ETH"), ("upbit", "KRW-XRP")]


def backfill(upbit: UpbitClient, days: list[date], pairs) -> dict:
    """1-minute candles of every (day, market) through the asset's queue; candle start times per (day, market)."""
    binance = BinanceClient("http://127.0.0.1:9")  # fetch_candles' signature; no Binance market is fetched
    got = {}
    for day, fetched in collect_days(days, pairs, lambda md: fetch_candles(md, "1m", upbit, binance), workers=4):
        for md, pages in fetched:
            got[(day, md.market)] = [item["candle_date_time_utc"] for page in pages for item in page.items]
    return got


def test_upbit_limiter_runs_at_the_simulators_limit_without_a_429(sim):
    upbit = UpbitClient(sim.upbit_rest_url)
    try:
        got = backfill(upbit, DAYS, MARKETS)
    finally:
        upbit.close()
    assert upbit.http.stats["429"] == 0 and upbit.http.stats["requests"] >= 2 * 3 * 8
    assert upbit.limiter.capacity("candle") == 10  # the server's whole allowance, not one below it
    # The server answered "none left" again and again: the pace was its limit, and still never crossed it.
    assert upbit.limiter.none_left_answers("candle") >= 5
    assert sorted(got) == sorted((d, m) for d in DAYS for _, m in MARKETS)
    for (day, _), starts in got.items():
        assert len(starts) == len(set(starts)) > 1000 and all(s.startswith(str(day)) for s in starts)


def test_retry_after_is_honoured_then_the_request_goes_through(sim):
    sim.set_faults(rest_429_burst=2)  # the next two REST answers: 429 with Retry-After: 1
    upbit = UpbitClient(sim.upbit_rest_url)
    try:
        page = upbit.candles("KRW-BTC", "1m", to=datetime.combine(DAYS[0], datetime.min.time(), tzinfo=timezone.utc))
        tickets = upbit.limiter.tickets("candle")
    finally:
        upbit.close()
    assert len(page.items) > 150 and upbit.http.stats["429"] == 2  # (minutes without trades have no candle)
    assert [t.status for t in tickets] == [429, 429, 200]
    for limited, after in zip(tickets, tickets[1:]):
        assert after.sent >= limited.answered + 1.0  # nothing left before the server's Retry-After was over


@pytest.mark.sim_options(upbit_ban_after=3)
def test_two_clients_on_one_host_take_turns_instead_of_earning_a_ban(sim, tmp_path):
    """Two backfill runs at once share one address's allowance. Each pacing itself to the full limit, they crossed it
    together (a 418 ban within seconds, before the host lock); with the lock they take turns, and neither sees a 429."""
    import threading

    results: dict[str, object] = {}

    def run(name: str) -> None:
        client = UpbitClient(sim.upbit_rest_url, lock_dir=tmp_path / "locks")
        try:
            results[name] = backfill(client, DAYS[:1], MARKETS)
        except Exception as exc:  # the assertion below names it
            results[name] = exc
        finally:
            client.close()
            results[name + "_429"] = client.http.stats["429"]

    threads = [threading.Thread(target=run, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert isinstance(results["a"], dict) and isinstance(results["b"], dict), results
    assert results["a"] == results["b"] and len(results["a"]) == len(MARKETS)
    assert results["a_429"] == results["b_429"] == 0


def test_a_process_taking_the_turn_leaves_the_last_ones_requests_their_second(tmp_path):
    """The host lock changes hands the moment one process has nothing in flight, often right after it filled the
    window. The one that takes over must not send into that full window (its first request drew a 429 one run in
    three): the releaser's note reserves each of its requests until the server's window lets it go."""
    now = [100.0]
    first = UpbitLimiter(10, lock_dir=tmp_path, clock=lambda: now[0])
    probe = first.acquire("candle")
    first.answered(probe, 200, "group=candle; min=1800; sec=9")
    now[0] = 101.1
    burst = [first.acquire("candle") for _ in range(10)]
    now[0] = 101.2
    for ticket, left in zip(burst, range(9, -1, -1)):
        first.answered(ticket, 200, f"group=candle; min=1800; sec={left}")  # the last one lets go of the lock
    second = UpbitLimiter(10, lock_dir=tmp_path, clock=lambda: now[0])
    now[0] = 101.3
    assert second.try_acquire("candle") == pytest.approx(0.9, abs=0.05)  # the burst frees at 102.2: wait for it
    assert second.capacity("candle") == 10  # learned from the note: no probe has to find out
    now[0] = 102.25
    assert sum(isinstance(second.try_acquire("candle"), Ticket) for _ in range(12)) == 10
    first.close()
    second.close()


def test_a_process_taking_over_from_one_that_died_holding_the_turn_waits_a_window(tmp_path):
    """A holder that died left no note: what it sent in its last second is unknown, so the next waits one window."""
    import subprocess
    import sys

    lock = tmp_path / "upbit-candle.lock"
    died = subprocess.run([sys.executable, "-c", "import sys; from cryptoflow_core.host_lock import HostLock; "
                           "assert HostLock(sys.argv[1]).try_hold()[0]; import os; os._exit(0)", str(lock)], timeout=60)
    assert died.returncode == 0 and "released" not in lock.read_text()
    now = [5.0]
    upbit = UpbitLimiter(10, lock_dir=tmp_path, clock=lambda: now[0])
    assert upbit.try_acquire("candle") == pytest.approx(1.0)
    now[0] = 6.0
    assert isinstance(upbit.try_acquire("candle"), Ticket)  # then one request alone finds the allowance out
    assert upbit.try_acquire("candle") == pytest.approx(0.01)
    upbit.close()


def test_another_client_seen_in_the_servers_count_is_left_its_share():
    """No host lock can see a client on another machine behind the same address: the server's `sec` can."""
    now = [50.0]
    upbit = UpbitLimiter(10, clock=lambda: now[0])
    probe = upbit.acquire("candle")
    now[0] = 50.02
    upbit.answered(probe, 200, "group=candle; min=1800; sec=9")
    assert upbit.capacity("candle") == 10
    ours = [upbit.acquire("candle") for _ in range(3)]
    now[0] = 50.05
    for ticket, left in zip(ours, (8, 7, 1)):  # the last answer: 9 counted, at most 4 of them ours
        upbit.answered(ticket, 200, f"group=candle; min=1800; sec={left}")
    issued = [upbit.try_acquire("candle") for _ in range(3)]
    assert [isinstance(t, Ticket) for t in issued] == [True, False, False]  # 10 - 5 others - 4 of ours
    now[0] = 51.1  # everything counted then has left the server's window
    upbit.answered(issued[0], 200, "group=candle; min=1800; sec=9")
    now[0] = 52.2
    assert sum(isinstance(upbit.try_acquire("candle"), Ticket) for _ in range(12)) == 10


def test_a_429_halves_what_the_limiter_plans_for_a_while():
    """Our own traffic cannot draw a 429, so one means a client elsewhere on our IP: leave it room, or both get banned."""
    now = [10.0]
    upbit = UpbitLimiter(10, clock=lambda: now[0])
    upbit.answered(upbit.acquire("candle"), 200, "group=candle; min=1800; sec=9")
    now[0] = 12.0
    upbit.answered(upbit.acquire("candle"), 429, "group=candle; min=1800; sec=0")
    now[0] = 13.5  # everything counted has left the window; the 429's 10 s of sharing have not
    issued = [upbit.try_acquire("candle") for _ in range(10)]
    assert sum(isinstance(t, Ticket) for t in issued) == 5
    for ticket in issued[:5]:
        upbit.answered(ticket, 200, "group=candle; min=1800; sec=5")
    now[0] = 22.5
    assert sum(isinstance(upbit.try_acquire("candle"), Ticket) for _ in range(12)) == 10  # the whole allowance again


def test_binance_weight_is_spread_over_the_minute_and_shared_with_other_processes():
    now = [600.0]  # the start of a minute
    weight = WeightLimiter(6000, safety=0.8, clock=lambda: now[0])  # budget 4800, burst 480

    def spend_now() -> int:
        spent = 0
        while isinstance(weight.try_acquire(2), Ticket):
            spent += 2
        return spent

    assert spend_now() == 480  # the burst, not the whole minute's budget
    assert weight.try_acquire(2) == pytest.approx(2 * 60 / 4800)  # the next 2 are released 25 ms later
    now[0] = 615.0
    assert spend_now() == 1200  # a quarter of the budget per quarter minute
    now[0] = 615.05
    ticket = weight.try_acquire(2)
    assert isinstance(ticket, Ticket)
    weight.answered(ticket, 200, "3500")  # the server counts more: another process spends the same allowance
    now[0] = 630.0  # 30 s in: 480 + 2400 released, already passed by what the server counted
    assert spend_now() == 0 and weight.try_acquire(2) == pytest.approx((3502 - 480) * 60 / 4800 - 30.0)
    now[0] = 659.9
    assert spend_now() + 3500 <= 4800  # what is left is spread over the rest of the minute, never past the budget
    now[0] = 660.0  # the next minute: a burst again
    assert spend_now() == 480
