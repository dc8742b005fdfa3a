"""``cryptoflow serve``: the API under uvicorn. Binds ``CRYPTOFLOW_API_HOST`` (127.0.0.1 by default); any other
address requires ``CRYPTOFLOW_API_KEYS``, or the server refuses to start."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from cryptoflow_core.priority import run_in_background
from cryptoflow_core.settings import load_env_files, load_settings
from cryptoflow_serving.auth import is_loopback

log = logging.getLogger(__name__)


class RefusedToStart(RuntimeError):
    pass


def check_exposure(host: str, keys: tuple[str, ...]) -> None:
    if not is_loopback(host) and not keys:
        raise RefusedToStart(
            f"refusing to serve on {host}: beyond loopback the API needs keys. Set CRYPTOFLOW_API_KEYS (comma-separated) "
            "or bind 127.0.0.1 (CRYPTOFLOW_API_HOST)")


def main(argv: Sequence[str] | None = None) -> int:
    load_env_files()
    settings = load_settings()
    parser = argparse.ArgumentParser(
        prog="cryptoflow serve",
        description="Serve the market-data API (docs/api.md): REST under /v1, live push at /v1/live, OpenAPI at /docs.",
        epilog="Settings: CRYPTOFLOW_API_HOST, CRYPTOFLOW_API_PORT, CRYPTOFLOW_API_KEYS, CRYPTOFLOW_API_RATE_LIMIT.",
    )
    parser.add_argument("--host", default=settings.api_host, help=f"address to bind (default {settings.api_host})")
    parser.add_argument("--port", type=int, default=settings.api_port, help=f"port (default {settings.api_port})")
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between live feed polls (default 0.5)")
    parser.add_argument("--queue-size", type=int, default=10_000,
                        help="messages a live client may fall behind before it is dropped (default 10000)")
    parser.add_argument("--cache-mb", type=int, default=64,
                        help="memory for answers kept while their rows are unchanged (default 64; 0: off)")
    args = parser.parse_args(argv)
    try:
        check_exposure(args.host, settings.api_keys)
    except RefusedToStart as exc:
        print(f"cryptoflow serve: {exc}", file=sys.stderr)
        return 2

    # The API reads what the writers commit: on a saturated machine the sidecar, the streaming run and the alert
    # sensor come first (ADR 0024), and the API's answers and pushes come a little later.
    nice = run_in_background(settings.background_nice)
    import uvicorn

    from cryptoflow_serving.app import create_app

    app = create_app(settings, poll_s=args.poll, queue_size=args.queue_size,
                     cache_bytes=args.cache_mb * 1024 * 1024)
    log.info("serving the market-data API on http://%s:%d (keys %s, nice %d)", args.host, args.port,
             "required" if settings.api_keys else "not required", nice)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", ws="websockets-sansio",
                timeout_graceful_shutdown=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
