"""Client-side rate limiting for the exchange REST APIs, shared by all threads of one client.

Upbit allows 10 requests/s per IP *per group* over a sliding one-second window and reports what is left in
``Remaining-Req: group=candle; min=1800; sec=9``. Binance counts request weight per calendar minute and reports the
total in ``X-MBX-USED-WEIGHT-1M``. Both answer 429 when crossed and then ban the IP with 418 if the client keeps
going, so the limiters here pace requests *before* sending them, believe the server's own count over ours, and the
HTTP core turns a repeated 429 into a clear stop instead of a ban.

Every request takes a :class:`Ticket` from its limiter before it is sent and hands it back with the answer: knowing
when each request left and when its answer came back is what lets the Upbit limiter use the whole window safely.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptoflow_core.host_lock import HostLock
from cryptoflow_core.retry import backoff_s

log = logging.getLogger(__name__)

_REMAINING_RE = re.compile(r"group=(?P<group>[a-z_-]+).*?sec=(?P<sec>-?\d+)", re.IGNORECASE)


def parse_remaining_req(header: str | None) -> tuple[str, int] | None:
    """``'group=candle; min=1800; sec=9'`` -> ``('candle', 9)``; ``None`` when absent or unreadable (``min`` is deprecated)."""
    if not header:
        return None
    match = _REMAINING_RE.search(header)
    if not match:
        return None
    return match.group("group"), int(match.group("sec"))


def _parse_window_note(note: str | None, *, per_second: int) -> tuple[int, list[float]] | None:
    """The Upbit limiter's note in a released host lock -> (the group's capacity or 0, until when each of the releaser's
    requests may still count at the server). ``""``: nobody held the lock before. ``None`` when unknown."""
    if note == "":
        return 0, []
    fields = dict(part.split("=", 1) for part in (note or "").split() if "=" in part)
    try:
        return min(per_second, int(fields["capacity"])), [float(b) for b in fields["busy_until"].split(",") if b]
    except (KeyError, ValueError):
        return None


def parse_retry_after(header: str | None) -> float | None:
    """Retry-After in seconds (the exchanges send delta-seconds, never an HTTP date)."""
    if not header:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        return None


def backoff_delay(attempt: int, *, base_s: float = 0.25, cap_s: float = 10.0, rng: Callable[[], float] = random.random) -> float:
    """The REST clients' wait before retry ``attempt``: up to ``base_s`` doubling to ``cap_s``, equal jitter (at least
    half of it), so concurrent market workers do not retry in lock step and hit the same window together."""
    return backoff_s(attempt, base_s=base_s, cap_s=cap_s, jitter="equal", rng=rng)


@dataclass(eq=False)
class Ticket:
    """One request as its limiter saw it: sent (clock time), answered (``None`` while in flight), the HTTP status."""

    key: str | int  # Upbit: the group; Binance: the calendar minute the weight was counted in
    sent: float
    weight: int = 1
    answered: float | None = None
    status: int | None = None


# How long an in-flight request keeps its slot's neighbours polling for a change (an answer frees nothing by itself).
_POLL_S = 0.01
# Tickets older than this no longer matter to any answer still to come (a window plus a slow trip).
_HISTORY_S = 3.0


# How long a 429 halves what we plan to use of a group: a client elsewhere on our IP gets room, its 429s stop.
_SHARE_AFTER_429_S = 10.0
# While another process holds a group's host lock, look again this often.
_LOCK_POLL_S = 0.1


@dataclass
class _UpbitGroup:
    tickets: deque[Ticket] = field(default_factory=deque)
    # The group's requests per second for this IP, learned from the first answer's `sec` (None: not known yet).
    capacity: int | None = None
    # Other clients' requests on our IP that the server's count revealed: (how many, gone from its window by).
    foreign: list[tuple[int, float]] = field(default_factory=list)
    blocked_until: float = 0.0
    none_left_answers: int = 0  # answers saying the window was full: proof the limiter ran at the server's limit
    probe: Ticket | None = None  # a request sent alone to learn the window's state; nothing else goes until it is back
    needs_probe: bool = True
    waiting: int = 0  # threads inside acquire(): while any wait, the host lock is kept
    lock: HostLock | None = None
    told_waiting: bool = False
    # After a 429 (only another client on our IP can cause one), plan with half the allowance for a while.
    shared: int | None = None
    shared_until: float = 0.0


class UpbitLimiter:
    """Per-group sliding one-second window, exact for our own requests and corrected by the server's ``sec`` count.

    The server counts a request when it *arrives*, some time between our send and the answer coming back. So a request
    of ours can only still be in the server's window while it is in flight or for one second after its answer: a new
    request may go out when fewer than ``capacity`` of ours are in that state. That rule can never cross the limit on
    our own traffic (take any one-second window of the server's: the last of our requests in it to be sent found every
    other one still in flight or answered less than a second before, so it went out only if they were fewer than
    ``capacity``), yet costs only each request's round trip (tens of ms), not the whole request per second that the
    old "one below the limit, wait a second after sec=0" rule cost (BENCHMARKS.md, backfill).

    The server's ``sec`` does two more things: the first answer tells the group's real allowance for this IP (a
    slower server, or another client already spending it), and any answer whose count is larger than every request
    of ours that could be in its window reveals other clients on the same IP, whose requests are then reserved until
    they age out of that window. A 429 (which our own traffic cannot draw) halves what we plan for a while.
    """

    def __init__(
        self,
        per_second: int = 10,
        *,
        lock_dir: Path | None = None,
        lock_prefix: str = "upbit",
        clock: Callable[[], float] = time.monotonic,
        sleep=time.sleep,
    ) -> None:
        self.per_second = max(1, per_second)  # the ceiling we never plan beyond, whatever the server allows
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._groups: dict[str, _UpbitGroup] = {}
        # With a lock_dir, one process on this host at a time sends each group's requests (a HostLock per group, held
        # while it has requests to send). Upbit's allowance is per IP: two processes each pacing themselves to the
        # full limit would together cross it, and their 429s add up to a 418 for both. Two backfill runs at once are
        # normal (the run queue allows them); the rate limit is the bottleneck, so taking turns costs the pair nothing.
        self._lock_dir, self._lock_prefix = lock_dir, lock_prefix

    def _group(self, name: str) -> _UpbitGroup:
        g = self._groups.get(name)
        if g is None:
            g = self._groups[name] = _UpbitGroup()
            if self._lock_dir is not None:
                g.lock = HostLock(self._lock_dir / f"{self._lock_prefix}-{name}.lock")
        return g

    def _hold_host_lock(self, g: _UpbitGroup, group: str, now: float) -> bool:
        if g.lock is None or g.lock.held:
            return True
        held, others_were_here = g.lock.try_hold()
        if held and others_were_here:
            self._take_over(g, g.lock.left_by_previous, now)
        if not held and not g.told_waiting:
            log.info("upbit %s: another process on this host is using this allowance; waiting for it (%s)", group, g.lock.path)
        g.told_waiting = not held
        return held

    def try_acquire(self, group: str) -> Ticket | float:
        """A ticket for a request of ``group`` to go out now, or the seconds to wait before asking again."""
        with self._lock:
            now = self._clock()
            g = self._group(group)
            while g.tickets and g.tickets[0].answered is not None and g.tickets[0].answered < now - _HISTORY_S:
                g.tickets.popleft()
            g.foreign = [(n, until) for n, until in g.foreign if until > now]
            if not self._hold_host_lock(g, group, now):
                return _LOCK_POLL_S
            if g.blocked_until > now:  # a Retry-After, or a window the process before us may have filled
                return g.blocked_until - now
            in_flight = [t for t in g.tickets if t.answered is None]
            if g.capacity is None or g.needs_probe or g.probe is not None:
                # Until the server has told us this group's allowance, one request at a time finds it out.
                if in_flight:
                    return _POLL_S
                g.needs_probe = False
                g.probe = self._issue(g, group, now)
                return g.probe
            # Ours that the server may still count: in flight, or answered less than a second ago.
            cooling = [t.answered + 1.0 for t in g.tickets if t.answered is not None and t.answered + 1.0 > now]
            others = max((n for n, _ in g.foreign), default=0)
            allowance = g.shared if g.shared is not None and now < g.shared_until else g.capacity
            if len(in_flight) + len(cooling) + others < allowance:
                return self._issue(g, group, now)
            frees = cooling + [until for _, until in g.foreign]
            return max(0.001, min(frees) - now) if frees and not in_flight else max(0.001, min([*frees, now + _POLL_S]) - now)

    def _take_over(self, g: _UpbitGroup, note: str | None, now: float) -> None:
        """Another process sent this group's requests before us. Its note says which of them the server may still
        count, and until when: those slots stay reserved. Sending a request to find out instead would itself draw a
        429 when the other process had just filled the window."""
        left = _parse_window_note(note, per_second=self.per_second)
        if left is None:  # it died holding the lock: wait out a whole window, then one request finds out the rest
            g.blocked_until = max(g.blocked_until, now + 1.0)
            g.needs_probe = True
            return
        capacity, busy_until = left
        if g.capacity is None and capacity:
            g.capacity = capacity
        g.needs_probe = False  # the note says what the window holds: no request has to find out
        # Nested reservations ("k busy until the first frees, k-1 until the second..."), as ``foreign`` holds them.
        busy_until = sorted(until for until in busy_until if until > now)
        g.foreign.extend((len(busy_until) - i, until) for i, until in enumerate(busy_until))

    def _window_note(self, g: _UpbitGroup, now: float) -> str:
        """For the next holder: until when our requests (and others' we saw) may still count at the server. In the
        limiter's clock: ``time.monotonic`` is the host's, the same in every process."""
        busy = [now + 1.0 if t.answered is None else t.answered + 1.0 for t in g.tickets]
        reserved = 0  # ``foreign`` holds overlapping sightings (the most still counted wins): one slot each, once
        for n, until in sorted(g.foreign, key=lambda f: -f[1]):
            busy += [until] * max(0, n - reserved)
            reserved = max(reserved, n)
        busy = sorted(b for b in busy if b > now)[-self.per_second:]
        return f"capacity={g.capacity or 0} busy_until=" + ",".join(f"{b:.3f}" for b in busy)

    @staticmethod
    def _issue(g: _UpbitGroup, group: str, now: float) -> Ticket:
        ticket = Ticket(group, now)
        g.tickets.append(ticket)
        return ticket

    def acquire(self, group: str) -> Ticket:
        with self._lock:
            self._group(group).waiting += 1
        try:
            while not isinstance(got := self.try_acquire(group), Ticket):
                self._sleep(got)
            return got
        finally:
            with self._lock:
                self._group(group).waiting -= 1

    def answered(self, ticket: Ticket, status: int | None, remaining_req: str | None) -> None:
        """Hand a ticket back: ``status`` None means no answer (the request may still have counted: it keeps its slot)."""
        parsed = parse_remaining_req(remaining_req)
        with self._lock:
            now = self._clock()
            ticket.answered, ticket.status = now, status
            g = self._group(str(ticket.key))
            if g.probe is ticket:
                g.probe = None
            if g.lock is not None and g.lock.held and not g.waiting and all(t.answered is not None for t in g.tickets):
                g.lock.release(self._window_note(g, now))  # nothing more to send for now: another process's turn
            if status == 429 and g.capacity is not None:
                planned = g.shared if g.shared is not None and now < g.shared_until else g.capacity
                g.shared = max(1, planned // 2)
                g.shared_until = now + _SHARE_AFTER_429_S
            if parsed is None or status not in (200, 429):
                return
            left = parsed[1]
            mine = [t for t in g.tickets if t is not ticket]
            if left <= 0:
                g.none_left_answers += 1
            if status == 200:
                # `left` plus this request is a floor under the allowance whatever the server's windows look like
                # (sliding or fixed seconds): counting more of ours as surely in its window would assume one of them.
                g.capacity = max(g.capacity or 0, min(self.per_second, left + 1))
            if g.capacity is None:
                return
            # The server's count when this request arrived, against every request of ours that could be in it: sent
            # before this answer, and answered (if at all) after a second before this request left. More than that
            # are other clients on this IP; they leave the window within a second of this answer.
            counted = g.capacity - left if status == 200 else g.capacity
            maybe_mine = (1 if status == 200 else 0) + sum(
                1 for t in mine if t.sent <= now and (t.answered is None or t.answered > ticket.sent - 1.0))
            if counted > maybe_mine:
                g.foreign.append((counted - maybe_mine, now + 1.0))

    def block(self, group: str, seconds: float) -> None:
        """Hold every request of ``group`` for ``seconds`` (a 429's Retry-After or backoff)."""
        with self._lock:
            g = self._group(group)
            g.blocked_until = max(g.blocked_until, self._clock() + seconds)

    def close(self) -> None:
        """Let go of every host lock (the client is done)."""
        with self._lock:
            now = self._clock()
            for g in self._groups.values():
                if g.lock is not None:
                    g.lock.release(self._window_note(g, now))

    def capacity(self, group: str) -> int | None:
        with self._lock:
            return self._group(group).capacity

    def none_left_answers(self, group: str) -> int:
        with self._lock:
            return self._group(group).none_left_answers

    def tickets(self, group: str) -> list[Ticket]:
        """The group's recent requests (the last few seconds), oldest first."""
        with self._lock:
            return list(self._group(group).tickets)


class WeightLimiter:
    """Binance request weight per calendar minute: spend at most ``safety`` of the limit, spread over the minute.

    The budget is released evenly (plus a small ``burst`` at the minute's start, so a short job is not paced at all):
    a backfill then runs at a steady rate instead of spending the whole minute in its first seconds and idling the
    rest, and a clock a little off from the server's never puts two budgets in one of its minutes. The server's
    ``X-MBX-USED-WEIGHT-1M`` wins whenever it reports more than we counted (other processes on the same IP spend the
    same allowance), and what is left is spread over what is left of the minute.
    """

    def __init__(
        self,
        weight_per_minute: int = 6000,
        *,
        safety: float = 0.8,
        burst: float = 0.1,
        clock: Callable[[], float] = time.time,
        sleep=time.sleep,
    ) -> None:
        self.budget = max(1, int(weight_per_minute * safety))
        self.burst = max(1, int(self.budget * burst))
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._minute = -1
        self._used = 0
        self._blocked_until = 0.0

    def _roll(self, now: float) -> None:
        minute = int(now // 60)
        if minute != self._minute:
            self._minute, self._used = minute, 0

    def released(self, now: float) -> float:
        """Weight this minute's pacing has released by ``now``: the burst, then the budget evenly over 60 s."""
        return min(self.budget, self.burst + self.budget * (now % 60) / 60)

    def try_acquire(self, weight: int) -> Ticket | float:
        if weight > self.budget:
            raise ValueError(f"a request of weight {weight} can never fit the per-minute budget of {self.budget}")
        with self._lock:
            now = self._clock()
            self._roll(now)
            if self._blocked_until > now:
                return self._blocked_until - now
            need = self._used + weight
            if need <= self.released(now):
                self._used = need
                return Ticket(self._minute, now, weight)
            if need > self.budget:
                return max(0.001, (self._minute + 1) * 60 - now)
            # when the even release reaches `need`
            return max(0.001, self._minute * 60 + (need - self.burst) * 60 / self.budget - now)

    def acquire(self, weight: int) -> Ticket:
        while not isinstance(got := self.try_acquire(weight), Ticket):
            self._sleep(got)
        return got

    def answered(self, ticket: Ticket, status: int | None, used_weight: str | None) -> None:
        ticket.answered, ticket.status = self._clock(), status
        if not used_weight:
            return
        try:
            used = int(used_weight)
        except ValueError:
            return
        with self._lock:
            self._roll(self._clock())
            if ticket.key == self._minute:  # an answer from the minute before says nothing about this one
                self._used = max(self._used, used)

    def block(self, seconds: float) -> None:
        with self._lock:
            self._blocked_until = max(self._blocked_until, self._clock() + seconds)

    @property
    def used(self) -> int:
        with self._lock:
            self._roll(self._clock())
            return self._used
