"""Upbit's window slides: after "none left", a slot frees when our oldest request in it ages out (plus its trip),
not a full second after the answer. Found by the backfill benchmark (63 % -> 80 % of the limit, no 429)."""

from __future__ import annotations

from cryptoflow_dagster.clients.ratelimit import _ARRIVAL_MARGIN_S, UpbitLimiter


def test_none_left_waits_for_the_oldest_request_to_age_out_not_a_whole_second():
    now = [100.0]
    upbit = UpbitLimiter(10, clock=lambda: now[0])
    upbit.observe("group=candle; min=1800; sec=9")
    sent = []
    for _ in range(9):  # nine requests spread over 0.8 s
        assert upbit.wait_time("candle") == 0.0
        sent.append(now[0])
        now[0] += 0.1
    now[0] = sent[-1] + 0.05
    upbit.observe("group=candle; min=1800; sec=0")  # the last answer: nothing left in the server's window
    answered = now[0]
    while (wait := upbit.wait_time("candle")) > 0:  # as acquire() does, on the fake clock
        now[0] += wait
    # free once the oldest requests have aged out of the server's window too (never sooner: no 429 bet) ...
    assert now[0] >= sent[0] + 1.0 + _ARRIVAL_MARGIN_S
    assert now[0] - answered < 0.6  # ... which is ~0.5 s after the answer, not the full second it used to wait
