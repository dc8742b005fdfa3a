"""The warnings gate: a run that passes but raised a warning nobody accepted fails (exit code 1).

Accepted warnings are filtered by name, each with its reason, in ``filterwarnings`` of ``[tool.pytest.ini_options]``
(pyproject.toml); a test that needs one of its own says so with ``@pytest.mark.filterwarnings``. Whatever pytest still
records after those filters is unexpected: the gate lists each one once at the end of the run, with where it came from,
and sets the exit code. It only watches, it never turns a warning into an exception ("error" would change what a
library does when it warns inside one of its threads).

The gate sees what pytest's ``warnings`` plugin records, so ``-p no:warnings`` switches it off: the run says so in its
summary, and refuses to pass under CI (``CI`` set in the environment). ``make test`` runs pytest without it.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field

import pytest

_ADVICE = "fix it, or filter it by name with its reason in pyproject.toml ([tool.pytest.ini_options] filterwarnings)"


@dataclass
class _Seen:
    category: str
    message: str
    where: str
    nodeids: list[str] = field(default_factory=list)
    count: int = 0


class WarningsGate:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.seen: dict[tuple[str, str, str], _Seen] = {}
        self.watching = config.pluginmanager.has_plugin("warnings")
        self.refused_off = False

    @pytest.hookimpl
    def pytest_warning_recorded(self, warning_message: warnings.WarningMessage, when: str, nodeid: str) -> None:
        category = warning_message.category
        name = f"{category.__module__}.{category.__qualname__}" if category.__module__ != "builtins" else category.__name__
        message = str(warning_message.message).strip()
        where = f"{warning_message.filename}:{warning_message.lineno}"
        seen = self.seen.setdefault((name, message, where), _Seen(name, message, where))
        seen.count += 1
        label = nodeid or f"<{when}>"
        if label not in seen.nodeids:
            seen.nodeids.append(label)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if session.exitstatus != pytest.ExitCode.OK:
            return  # the run failed already: the warnings are listed all the same
        if self.seen:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        elif not self.watching and os.environ.get("CI"):
            self.refused_off = True
            session.exitstatus = pytest.ExitCode.USAGE_ERROR

    @pytest.hookimpl
    def pytest_terminal_summary(self, terminalreporter) -> None:
        tr = terminalreporter
        if not self.watching:
            tr.write_sep("=", "warnings gate OFF", yellow=True)
            tr.write_line("-p no:warnings disables pytest's warning capture, and with it the warnings gate "
                          "(tests/warnings_gate.py); `make test` runs with it."
                          + (" Refused under CI." if self.refused_off else ""))
            return
        if not self.seen:
            return
        tr.write_sep("=", f"warnings gate: {len(self.seen)} unexpected warning(s)", red=True, bold=True)
        for seen in self.seen.values():
            first_line = seen.message.splitlines()[0] if seen.message else ""
            tr.write_line(f"{seen.category}: {first_line[:400]}", red=True)
            tr.write_line(f"    raised at {seen.where} ({seen.count}x)")
            shown = ", ".join(seen.nodeids[:3]) + (f" and {len(seen.nodeids) - 3} more" if len(seen.nodeids) > 3 else "")
            tr.write_line(f"    during {shown}")
            if "ResourceWarning" in seen.category or "Unraisable" in seen.category:
                tr.write_line("    (reported where it was garbage-collected: PYTHONTRACEMALLOC=25 shows where it "
                              "was allocated)")
        tr.write_line(f"These fail the run. What to do: {_ADVICE}.")


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin("warnings-gate-impl"):
        config.pluginmanager.register(WarningsGate(config), "warnings-gate-impl")
