"""Talking to a running Dagster webserver: is the code location really loaded?

The UI answers HTTP 200 even when the code location failed to import, so readiness is read from GraphQL
(``workspaceOrError``), never from the status code. Used by ``cryptoflow demo``, ``cryptoflow doctor`` and the tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

WORKSPACE_QUERY = """
query CryptoflowWorkspace {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on PythonError { message }
        }
      }
    }
    ... on PythonError { message }
  }
}
"""


class DagsterUIError(RuntimeError):
    """The webserver did not come up with every code location loaded; the message says why."""


@dataclass(frozen=True)
class LocationStatus:
    name: str
    load_status: str  # LOADING | LOADED
    kind: str  # RepositoryLocation when it imported, PythonError when it did not
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.load_status == "LOADED" and self.kind == "RepositoryLocation"


def location_statuses(base_url: str, *, timeout_s: float = 5.0) -> list[LocationStatus]:
    """Every code location the webserver knows, as GraphQL reports it. Raises httpx errors when nobody answers."""
    response = httpx.post(f"{base_url.rstrip('/')}/graphql", json={"query": WORKSPACE_QUERY}, timeout=timeout_s)
    response.raise_for_status()
    workspace = response.json()["data"]["workspaceOrError"]
    if workspace["__typename"] != "Workspace":
        raise DagsterUIError(f"workspace failed to load: {workspace.get('message', workspace['__typename'])}")
    return [
        LocationStatus(
            name=entry["name"],
            load_status=entry["loadStatus"],
            kind=(entry["locationOrLoadError"] or {}).get("__typename", "None"),
            error=(entry["locationOrLoadError"] or {}).get("message"),
        )
        for entry in workspace["locationEntries"]
    ]


def wait_until_loaded(
    base_url: str,
    *,
    timeout_s: float = 120.0,
    still_running: Callable[[], bool] = lambda: True,
    poll_s: float = 0.5,
) -> list[LocationStatus]:
    """Poll until every code location is LOADED as a RepositoryLocation.

    Fails fast, with the import error, when a location finished loading as a PythonError (waiting longer cannot help),
    and when ``still_running()`` says the server process died.
    """
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    while time.monotonic() < deadline:
        if not still_running():
            raise DagsterUIError(f"the Dagster webserver exited before {base_url} was ready ({last})")
        try:
            statuses = location_statuses(base_url)
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            failed = [s for s in statuses if s.load_status == "LOADED" and s.kind != "RepositoryLocation"]
            if failed:
                raise DagsterUIError(
                    "code location failed to load: " + "; ".join(f"{s.name}: {s.error or s.kind}" for s in failed)
                )
            if statuses and all(s.ok for s in statuses):
                return statuses
            last = ", ".join(f"{s.name}={s.load_status}" for s in statuses) or "no code locations"
        time.sleep(poll_s)
    raise DagsterUIError(f"{base_url} not ready after {timeout_s:.0f}s ({last})")
