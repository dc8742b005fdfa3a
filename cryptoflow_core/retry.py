"""Retry with capped exponential backoff and jitter: the one way every CryptoFlow process waits before trying again.

The wait before retry ``attempt`` (1 after the first failure) has a ceiling, ``min(cap_s, base_s * 2 ** (attempt - 1))``,
and a jitter that spreads the processes that failed together so that they do not retry in lock step. The jitter kinds
are those of the AWS Architecture Blog ("Exponential Backoff And Jitter", 2015):

- ``"none"``: the ceiling itself;
- ``"equal"``: half the ceiling plus a uniform draw over the other half, ``[ceiling / 2, ceiling]``: never shorter than
  half, so a retry never comes straight back;
- ``"full"``: a uniform draw over ``[0, ceiling]``: the widest spread, and some retries come back at once.

The sidecar imports this too, so it imports nothing but the standard library.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Literal, TypeVar

T = TypeVar("T")
Jitter = Literal["none", "equal", "full"]

# 2 ** 1000 is still a float; beyond it the ceiling would overflow. Every cap is reached long before.
_MAX_DOUBLINGS = 1000


def jittered(ceiling_s: float, jitter: Jitter, rng: Callable[[], float] = random.random) -> float:
    """A wait of at most ``ceiling_s`` with ``jitter`` (``rng`` draws uniformly from [0, 1))."""
    if jitter == "none":
        return ceiling_s
    if jitter == "equal":
        return ceiling_s / 2 + rng() * ceiling_s / 2
    if jitter == "full":
        return rng() * ceiling_s
    raise ValueError(f"unknown jitter {jitter!r}: none, equal or full")


def backoff_s(
    attempt: int,
    *,
    base_s: float,
    cap_s: float = float("inf"),
    jitter: Jitter,
    rng: Callable[[], float] = random.random,
) -> float:
    """The wait before retry ``attempt`` (1 after the first failure): ``base_s`` doubling each attempt, never above
    ``cap_s``, with ``jitter``."""
    ceiling = min(cap_s, base_s * 2.0 ** min(max(0, attempt - 1), _MAX_DOUBLINGS))
    return jittered(ceiling, jitter, rng)


def retry(
    fn: Callable[[], T],
    *,
    retryable: Callable[[Exception], bool],
    attempts: int,
    base_s: float,
    cap_s: float = float("inf"),
    jitter: Jitter,
    on_retry: Callable[[int, float, Exception], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    rng: Callable[[], float] = random.random,
) -> T:
    """``fn()``, called again after a backoff each time it raises an error ``retryable`` accepts, ``attempts`` times at
    most. Any other error, or the last attempt's, is raised as it is. ``on_retry(attempt, wait_s, error)`` is told of
    each retry before its wait (to log it)."""
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:
            if attempt == attempts or not retryable(exc):
                raise
            wait = backoff_s(attempt, base_s=base_s, cap_s=cap_s, jitter=jitter, rng=rng)
            if on_retry is not None:
                on_retry(attempt, wait, exc)
            sleep(wait)
    raise AssertionError("unreachable")
