"""What the lake's errors mean: :class:`LakeError` (the lake cannot be opened) and :func:`is_retryable` (a commit or a
catalog read that lost a race to another writer, which running again can fix)."""

from __future__ import annotations


class LakeError(RuntimeError):
    """The lake cannot be opened; the message says what to do about it."""


# Messages DuckLake/DuckDB give when a commit lost a race with another writer; anything else is a real error.
_RETRYABLE = (
    "database is locked",
    "Failed to commit DuckLake transaction",
    "Transaction conflict",
    "write-write conflict",
    "could not serialize access",
    "deadlock detected",
)


def is_retryable(exc: BaseException | str) -> bool:
    text = str(exc)
    return any(marker in text for marker in _RETRYABLE)
