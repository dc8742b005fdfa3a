"""Names and quoting in the lake's SQL text: the catalog's name, string literals for the statements that take no
prepared parameters, and the check that a table name formatted into SQL is a contract table."""

from __future__ import annotations

import re

# The name the DuckLake catalog is attached as, and every session's default catalog.
CATALOG = "lake"

# A table of the contract's schemas (dbt-built gold tables are not in schema.TABLES): it is formatted into SQL, so
# nothing else.
_TABLE_NAME = re.compile(r"(bronze|silver|gold|ops)\.[a-z_][a-z0-9_]*")


def literal(value: str) -> str:
    """A SQL string literal, for the few statements (ATTACH, INSTALL, CREATE SECRET) that take no prepared parameters."""
    return "'" + value.replace("'", "''") + "'"


def is_table_name(name: str) -> bool:
    return bool(_TABLE_NAME.fullmatch(name))
