"""The one backoff helper: each jitter kind stays inside its bounds, the cap caps, and the retry loop retries only what
it is told to, as many times as it is told."""

from __future__ import annotations

import random

import pytest

from cryptoflow_core.retry import backoff_s, jittered, retry

CEILINGS = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]  # base 0.25 s, cap 10 s, attempts 1..9


@pytest.mark.parametrize("draw", [0.0, 0.3, 0.999999])
def test_each_jitter_kind_spans_its_range(draw):
    for attempt, ceiling in enumerate(CEILINGS, start=1):
        wait = lambda jitter: backoff_s(attempt, base_s=0.25, cap_s=10.0, jitter=jitter, rng=lambda: draw)
        assert wait("none") == ceiling
        assert wait("full") == pytest.approx(draw * ceiling)  # uniform over [0, ceiling]
        assert wait("equal") == pytest.approx(ceiling / 2 + draw * ceiling / 2)  # uniform over [ceiling / 2, ceiling]


def test_seeded_draws_stay_in_bounds_and_the_cap_holds():
    rng = random.Random(7).random
    for attempt in range(1, 60):
        ceiling = min(30.0, 0.25 * 2 ** (attempt - 1))
        full = backoff_s(attempt, base_s=0.25, cap_s=30.0, jitter="full", rng=rng)
        equal = backoff_s(attempt, base_s=0.25, cap_s=30.0, jitter="equal", rng=rng)
        assert 0.0 <= full <= ceiling and ceiling / 2 <= equal <= ceiling <= 30.0
    assert backoff_s(10_000, base_s=1.0, cap_s=5.0, jitter="none") == 5.0  # no overflow on a very long outage
    assert backoff_s(0, base_s=2.0, jitter="none") == 2.0  # attempt 0 or less waits as attempt 1


def test_an_unknown_jitter_is_refused():
    with pytest.raises(ValueError, match="jitter"):
        jittered(1.0, "half")  # type: ignore[arg-type]


def test_retry_retries_only_retryable_errors_up_to_attempts():
    waits, told, calls = [], [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("database is locked")
        return "done"

    assert retry(flaky, retryable=lambda e: "locked" in str(e), attempts=5, base_s=0.1, cap_s=0.15, jitter="none",
                 sleep=waits.append, on_retry=lambda a, w, e: told.append((a, w))) == "done"
    assert waits == [0.1, 0.15] and told == [(1, 0.1), (2, 0.15)]

    with pytest.raises(RuntimeError, match="locked"):  # the last attempt's error, as it was
        retry(lambda: (_ for _ in ()).throw(RuntimeError("locked")), retryable=lambda e: True, attempts=3,
              base_s=0.0, jitter="full", sleep=lambda s: None)

    calls.clear()
    with pytest.raises(ValueError):  # not retryable: raised at once
        retry(lambda: calls.append(1) or (_ for _ in ()).throw(ValueError("bad")), retryable=lambda e: False,
              attempts=5, base_s=0.0, jitter="none", sleep=lambda s: None)
    assert len(calls) == 1
