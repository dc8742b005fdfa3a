"""``.env.example`` is generated from cryptoflow_core/settings.py, so it cannot drift: ``python -m cryptoflow_dagster.env_example``
rewrites it, and tests/test_cli_env_example.py fails when the committed file differs from what this renders."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

from cryptoflow_core.settings import setting_docs

ENV_EXAMPLE = Path(__file__).resolve().parents[1] / ".env.example"

HEADER = """\
# CryptoFlow settings: every CRYPTOFLOW_* variable with its default and meaning.
# GENERATED from cryptoflow_core/settings.py by `python -m cryptoflow_dagster.env_example`: do not edit by hand.
# Copy to .env (git-ignored; every command reads ./.env, then $CRYPTOFLOW_HOME/.env) or export the variables you
# change; the process environment wins, and unset ones take the default shown.
"""

SECRETS = """\
# --- Secrets: only from the environment, read by Dagster through dg.EnvVar, never logged ---
# Slack bot token (xoxb-...) for alerts and the digest. `cryptoflow demo` sets a dummy one for its own processes
# when this is unset, because the demo's Slack is the simulator's sink.
SLACK_BOT_TOKEN=
"""


def render() -> str:
    blocks = [HEADER]
    for doc in setting_docs():
        comment = "\n".join(textwrap.wrap(doc.help, width=116, initial_indent="# ", subsequent_indent="# "))
        blocks.append(f"{comment}\n{doc.env}={_value(doc.default)}\n")
    blocks.append(SECRETS)
    return "\n".join(blocks)


def _value(default: str) -> str:
    # Quoted when a shell or a dotenv parser would otherwise split or expand it (e.g. a cron expression).
    if default and any(c in default for c in " *$#'\"\\;&|<>()`"):
        return '"' + default.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return default


def main(argv: list[str] | None = None) -> int:
    ENV_EXAMPLE.write_text(render())
    print(f"wrote {ENV_EXAMPLE}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
