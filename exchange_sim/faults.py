"""Fault switches: set at start (``--faults`` JSON) or at run time (POST /_sim/faults), read by every adapter.

Faults are counter-based rather than random so a test can say exactly which message or request misbehaves.
"""

from __future__ import annotations

import itertools
import re
import time
from dataclasses import asdict, dataclass, fields


@dataclass
class Faults:
    ws_disconnect_every_s: float = 0.0  # close every WebSocket after this long (0: never)
    ws_malformed_every: int = 0  # after every Nth message, one frame of broken JSON
    ws_duplicate_every: int = 0  # every Nth message is sent twice
    ws_out_of_order_every: int = 0  # every Nth message swaps places with the one after it
    ws_schema_drift_after: int = 0  # from the Nth message on, messages carry an extra field
    rest_slow_ms: int = 0  # delay every exchange REST answer
    rest_5xx_every: int = 0  # every Nth exchange REST request answers 503
    rest_429_burst: int = 0  # the next N exchange REST requests answer 429 (counts down)
    rest_bad_candle_every: int = 0  # Upbit REST minute candles starting on a minute (since the epoch) divisible by N: low above high
    slack_status: int = 0  # 429 or 500: the Slack sink fails with this status

    def __post_init__(self) -> None:
        # Not a switch (outside the dataclass fields): what the malformed switch sent, for checks that want
        # "dead letters exactly the malformed frames". Survives reset, like the traffic counters.
        self.malformed = MalformedLedger()

    def update(self, changes: dict) -> None:
        known = {f.name: f.type for f in fields(self)}
        unknown = sorted(set(changes) - set(known))
        if unknown:
            raise ValueError(f"unknown fault switch(es) {unknown}; known: {sorted(known)}")
        for name, value in changes.items():
            current = getattr(self, name)
            try:
                setattr(self, name, type(current)(value))
            except (TypeError, ValueError):
                raise ValueError(f"fault {name} wants a {type(current).__name__}, got {value!r}") from None
        if self.slack_status not in (0, 429, 500):
            raise ValueError("slack_status must be 0, 429 or 500")

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def ws_active(self) -> bool:
        return bool(self.ws_malformed_every or self.ws_duplicate_every or self.ws_out_of_order_every or self.ws_schema_drift_after)


DRIFT_FIELD = '"sim_added_field":"drift"'
MALFORMED_FRAME = '{"type":"trade","code":'  # how every malformed frame starts: cut mid-object...
_SERIAL_RE = re.compile(r'"sim-malformed-(\d+)\Z')  # ...then an unterminated string naming its serial


def malformed_frame(serial: int) -> str:
    """A frame of broken JSON that still says which one it is, so a dead letter can be traced to the frame sent."""
    return f'{MALFORMED_FRAME}"sim-malformed-{serial}'


def malformed_serial(raw: bytes | str) -> int | None:
    """The serial of a frame made by :func:`malformed_frame`; None for any other bytes."""
    text = raw if isinstance(raw, str) else bytes(raw).decode("utf-8", "replace")
    m = _SERIAL_RE.search(text) if text.startswith(MALFORMED_FRAME) else None
    return int(m.group(1)) if m else None


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class MalformedLedger:
    """Every malformed frame the simulator made, per connection, and how each connection ended.

    A frame is recorded when it is put in a send (``sent_at_ms`` None) and stamped once the send returned: a send cut
    off by a closing connection leaves frames that may or may not have reached the client. ``closed_by`` and
    ``close_code`` say how a connection ended (a client gone without a close frame, e.g. killed, shows 1005 or 1006).
    """

    def __init__(self) -> None:
        self._serials = itertools.count(1)
        self._connections = itertools.count(1)
        self.frames: list[dict] = []
        self.connections: dict[int, dict] = {}

    def open(self, exchange: str) -> int:
        conn = next(self._connections)
        self.connections[conn] = {"exchange": exchange, "opened_ms": _now_ms(), "ended_ms": None, "close_code": None,
                                  "closed_by": None}
        return conn

    def make(self, conn: int) -> tuple[dict, str]:
        serial = next(self._serials)
        entry = {"serial": serial, "exchange": self.connections[conn]["exchange"], "connection": conn,
                 "sent_at_ms": None}
        self.frames.append(entry)
        return entry, malformed_frame(serial)

    def ended(self, conn: int, code: int | None, closed_by: str) -> None:
        c = self.connections[conn]
        if c["ended_ms"] is None:  # the first side to close names the ending
            c.update(ended_ms=_now_ms(), close_code=code, closed_by=closed_by)

    def as_dict(self) -> dict:
        return {"frames": list(self.frames), "connections": {str(k): dict(v) for k, v in self.connections.items()}}


class FrameFaults:
    """Per-connection message mangling, counted per message: drift, then duplicates, swaps and garbage frames.

    ``drift_offset`` is how many closing characters follow the payload object in a frame: 1 for ``{...}``, 2 for a
    Binance combined ``{"stream":..,"data":{...}}`` or an Upbit list ``[{...}]``, so the field lands in the payload.
    """

    def __init__(self, faults: Faults, drift_offset: int = 1, exchange: str = ""):
        self.faults = faults
        self.drift_offset = drift_offset
        self.sent = 0
        self.pending = None  # a frame held back to go out after the next one (kept across sends)
        self.connection = faults.malformed.open(exchange)
        self._unconfirmed: list[dict] = []  # malformed frames of the send in progress

    def delivered(self) -> None:
        """The last arranged frames went out: stamp their malformed frames as sent."""
        now = _now_ms()
        for entry in self._unconfirmed:
            entry["sent_at_ms"] = now
        self._unconfirmed = []

    def ended(self, code: int | None, closed_by: str) -> None:
        self.faults.malformed.ended(self.connection, code, closed_by)

    def _drift(self, frame: str) -> str:
        k = self.drift_offset
        return frame[:-k] + "," + DRIFT_FIELD + frame[-k:]

    def arrange(self, frames: list) -> list:
        f = self.faults
        out: list = []
        pending, self.pending = self.pending, None
        for frame in frames:
            self.sent += 1
            n = self.sent
            if f.ws_schema_drift_after and n >= f.ws_schema_drift_after and isinstance(frame, str):
                frame = self._drift(frame)
            if pending is not None:
                out.extend((frame, pending))
                pending = None
            elif f.ws_out_of_order_every and n % f.ws_out_of_order_every == 0:
                pending = frame
                continue
            else:
                out.append(frame)
            if f.ws_duplicate_every and n % f.ws_duplicate_every == 0:
                out.append(frame)
            if f.ws_malformed_every and n % f.ws_malformed_every == 0:
                entry, garbage = self.faults.malformed.make(self.connection)
                self._unconfirmed.append(entry)
                out.append(garbage)
        self.pending = pending
        return out
