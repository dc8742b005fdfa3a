"""The landing-path contract between the sidecar (writer) and the Dagster sensor (reader). Both sides import this.

    <landing>/<exchange>/<channel>/date=YYYY-MM-DD/<UTC time>-<session>-<seq>.parquet

- ``<UTC time>`` is ``YYYYMMDDTHHMMSSffffffZ``: file names sort by time, so a sensor cursor can be a file name.
- A file is written as ``.<name>.tmp`` in the same folder, fsynced, then renamed: a reader that lists ``*.parquet``
  never sees half a file (rename is atomic within one filesystem).
- Names are validated on both sides: a file whose name does not match is never read, so a stray or hostile
  file cannot steer a path or a query.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from functools import cache
from pathlib import Path


@cache
def schema():
    """The landing file schema: the frame verbatim plus what routing, exactly-once and latency measurement need.

    A function, so that importing the contract (the Dagster code location does) does not import pyarrow."""
    import pyarrow as pa

    return pa.schema(
        [
            ("exchange", pa.string()),
            ("market", pa.string()),
            ("trade_id", pa.int64()),
            ("event_time_ms", pa.int64()),
            ("receive_time_us", pa.int64()),
            ("session_id", pa.string()),
            ("raw", pa.binary()),
            ("error", pa.string()),  # set: the frame is a dead letter, and this is why
        ]
    )


EXCHANGES = ("upbit", "binance")
CHANNELS = ("trade", "ticker")
TMP_PREFIX = "."
TMP_SUFFIX = ".tmp"

# re.ASCII: without it \d also matches other scripts' digits (e.g. fullwidth); \Z, not $, which lets a trailing "\n" in.
_NAME_RE = re.compile(r"^(?P<time>\d{8}T\d{12}Z)-(?P<session>[0-9a-f]{8,32})-(?P<seq>\d{8})\.parquet\Z", re.ASCII)
_TIME_FORMAT = "%Y%m%dT%H%M%S%fZ"


@dataclass(frozen=True, order=True)
class LandingFile:
    """One landed micro-batch. Ordering is by name (time first), then by folder."""

    name: str
    exchange: str
    channel: str
    day: date
    path: Path

    @property
    def written_at(self) -> datetime:
        return datetime.strptime(self.name[:22], _TIME_FORMAT).replace(tzinfo=timezone.utc)

    @property
    def relative(self) -> str:
        """Path relative to the landing root: what bronze rows and ``ops.ingested_files`` record."""
        return f"{self.exchange}/{self.channel}/date={self.day.isoformat()}/{self.name}"


def file_name(when: datetime, session: str, seq: int) -> str:
    name = f"{when.astimezone(timezone.utc).strftime(_TIME_FORMAT)}-{session}-{seq:08d}.parquet"
    if not _NAME_RE.match(name):
        raise ValueError(f"bad landing file name parts: session={session!r} seq={seq!r}")
    return name


def landing_path(root: Path, exchange: str, channel: str, when: datetime, session: str, seq: int) -> Path:
    """Final path of a micro-batch written at ``when`` (its UTC date picks the ``date=`` folder)."""
    if exchange not in EXCHANGES or channel not in CHANNELS:
        raise ValueError(f"unknown landing stream {exchange}/{channel}")
    day = when.astimezone(timezone.utc).date()
    return root / exchange / channel / f"date={day.isoformat()}" / file_name(when, session, seq)


def temp_path(final: Path) -> Path:
    return final.with_name(f"{TMP_PREFIX}{final.name}{TMP_SUFFIX}")


def write_atomically(final: Path, write) -> Path:
    """Call ``write(tmp_path)``, fsync the file, rename it to ``final`` and fsync the folder. Returns ``final``."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(final)
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a crash only once the folder is synced
    finally:
        os.close(dir_fd)
    return final


def parse(path: Path, root: Path) -> LandingFile | None:
    """The :class:`LandingFile` for ``path`` under ``root``, or None when it does not follow the contract."""
    try:
        rel = path.relative_to(root)
    except ValueError:
        return None
    parts = rel.parts
    if len(parts) != 4 or parts[0] not in EXCHANGES or parts[1] not in CHANNELS or not parts[2].startswith("date="):
        return None
    if not _NAME_RE.match(parts[3]):
        return None
    try:
        day = date.fromisoformat(parts[2][5:])
    except ValueError:
        return None
    return LandingFile(name=parts[3], exchange=parts[0], channel=parts[1], day=day, path=path)


def list_files(root: Path, after: str | None = None, channels: tuple[str, ...] = CHANNELS) -> list[LandingFile]:
    """Every landed file (never a temp file) whose name sorts after ``after``, oldest first."""
    found: list[LandingFile] = []
    if not root.exists():
        return found
    for exchange in EXCHANGES:
        for channel in channels:
            base = root / exchange / channel
            if not base.is_dir():
                continue
            for day_dir in base.iterdir():
                if not day_dir.is_dir():
                    continue
                for entry in os.scandir(day_dir):
                    if not entry.name.endswith(".parquet") or (after is not None and entry.name <= after):
                        continue
                    landed = parse(Path(entry.path), root)
                    if landed is not None:
                        found.append(landed)
    found.sort()
    return found


class NewFiles:
    """Trade files a reader has not taken yet: the streaming run's loop and the market alert sensor follow the landing
    folder with it.

    A plain "newest name seen" cursor is not enough with several sidecars (shards): each names its files by its own
    flush time, so a file can land with a name slightly older than one already seen. Each look therefore lists names
    from ``OVERLAP`` before the newest taken one and skips those already taken; listing compares names only (no
    catalog query), so a reader can look several times a second.
    """

    OVERLAP = timedelta(seconds=30)

    def __init__(self, root: Path, start_after: datetime | None = None, channels: tuple[str, ...] = ("trade",)) -> None:
        self.root = root
        self.channels = channels
        self.start_after = None if start_after is None else file_name(start_after, "0" * 8, 0)
        self.taken: dict[str, LandingFile] = {}  # by relative path; only names inside the overlap window are kept

    def poll(self) -> list[LandingFile]:
        """Files landed since the last look that were not taken yet, oldest first."""
        if not self.taken:
            return list_files(self.root, after=self.start_after, channels=self.channels)
        newest = max(self.taken.values(), key=lambda f: f.name)
        after = file_name(newest.written_at - self.OVERLAP, "0" * 8, 0)
        self.taken = {rel: f for rel, f in self.taken.items() if f.name > after}
        return [f for f in list_files(self.root, after=after, channels=self.channels) if f.relative not in self.taken]

    def take(self, files: list[LandingFile]) -> None:
        self.taken.update((f.relative, f) for f in files)
        if files:
            self.start_after = max([self.start_after or "", *(f.name for f in files)])

    def cursor(self) -> str:
        """A JSON cursor (a sensor's) that :meth:`from_cursor` turns back into this reader."""
        return json.dumps({"after": self.start_after, "taken": sorted(self.taken)})

    @classmethod
    def from_cursor(cls, root: Path, cursor: str) -> NewFiles:
        state = json.loads(cursor)
        reader = cls(root)
        reader.start_after = state.get("after")
        for rel in state.get("taken", []):
            landed = parse(root / rel, root)  # a tampered cursor cannot point outside the landing contract
            if landed is not None:
                reader.taken[rel] = landed
        return reader
