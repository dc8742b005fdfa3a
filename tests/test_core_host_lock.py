"""The one host lock, both ways to take it: try_hold (no wait; tells whether someone else held it since) and hold
(waits, naming the holder while it waits). Holders in other processes, as in use."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time

from cryptoflow_core.host_lock import HostLock

# Holds the lock from another process until told to let go.
HOLDER = r"""
import sys
from cryptoflow_core.host_lock import HostLock
lock = HostLock(sys.argv[1])
assert lock.try_hold()[0]
print("holding", flush=True)
sys.stdin.readline()
lock.release()
print("released", flush=True)
"""


def _holder(path):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "holding"
    return proc


def _let_go(proc) -> None:
    with proc:  # closes the pipes on the way out
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "released"
        proc.wait(10)


def test_try_hold_does_not_wait_and_tells_of_another_holder_since(tmp_path):
    path = tmp_path / "locks" / "group.lock"
    ours = HostLock(path)
    assert ours.try_hold() == (True, True)  # first time: whoever was there before is unknown
    assert ours.try_hold() == (True, False) and ours.held
    ours.release()
    assert ours.try_hold() == (True, False)  # nobody else in between
    ours.release()
    other = _holder(path)
    try:
        assert ours.try_hold() == (False, False) and not ours.held
    finally:
        _let_go(other)
    assert ours.try_hold() == (True, True)  # the other process held it since
    ours.release()


def test_hold_waits_for_the_holder_and_names_it_while_waiting(tmp_path, caplog):
    path = tmp_path / "writer-lock"
    other = _holder(path)
    logger = logging.getLogger("test.host_lock")
    caplog.set_level("WARNING", logger="test.host_lock")
    got = []
    ours = HostLock(path)
    waiter = threading.Thread(target=lambda: got.append(ours.hold(warn_every_s=0.2, what="test turn", logger=logger)))
    waiter.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not caplog.records:
            time.sleep(0.05)
        message = caplog.records[0].getMessage()
        assert message.startswith("test turn: waiting") and f"for process {other.pid}," in message
        assert got == [] and waiter.is_alive()  # no timeout
    finally:
        _let_go(other)
    waiter.join(20)
    assert got == [None] and ours.held
    assert any("test turn: got it after" in r.getMessage() for r in caplog.records)
    assert path.read_text().split()[0] == str(__import__("os").getpid())  # we are the holder now, for others to read
    ours.release()


def test_the_next_holder_reads_what_the_last_one_left_and_knows_when_it_died_holding(tmp_path):
    path = tmp_path / "group.lock"
    ours = HostLock(path)
    assert ours.try_hold()[0] and ours.left_by_previous == ""  # nobody before
    ours.release("busy_until=12.5")
    other = _holder(path)  # takes it from us, reads our note, lets go without one
    _let_go(other)
    assert ours.try_hold() == (True, True) and ours.left_by_previous == ""
    ours.release("capacity=10")
    died = subprocess.run([sys.executable, "-c", "import os, sys; from cryptoflow_core.host_lock import HostLock; "
                           "lock = HostLock(sys.argv[1]); assert lock.try_hold()[0]; "
                           "assert lock.left_by_previous == 'capacity=10'; os._exit(0)", str(path)], timeout=60)
    assert died.returncode == 0
    assert ours.try_hold() == (True, True) and ours.left_by_previous is None  # it held the lock when it died
    ours.release()
