"""Errors a subcommand reports as one clear line and an exit code, instead of a traceback."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


class CliError(Exception):
    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def load_entry_point(module: str, attribute: str = "main", *, what: str) -> Callable[..., Any]:
    """Import ``module.attribute`` when the command runs; a clear error when that part of the platform is not there.

    Only the module itself (or its package) being absent is turned into that message: an ImportError raised from inside
    an existing module is a real bug and keeps its traceback.
    """
    try:
        loaded = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            raise CliError(f"{what} is not available in this installation: module {module} not found") from None
        raise
    entry = getattr(loaded, attribute, None)
    if not callable(entry):
        raise CliError(f"{what} is not available: {module} has no {attribute}()")
    return entry
