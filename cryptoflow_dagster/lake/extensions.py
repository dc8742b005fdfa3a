"""DuckDB extensions from the ``duckdb-extension-*`` packages, installed into a project-owned extension folder and
loaded from there: no download, ever."""

from __future__ import annotations

import importlib
from pathlib import Path

import duckdb

from cryptoflow_core.settings import Settings
from cryptoflow_dagster.lake.errors import LakeError
from cryptoflow_dagster.lake.sql import literal

DUCKDB_VERSION = "1.5.5"

# extension name as DuckDB knows it -> the PyPI package that carries the signed binary, and the file's stem in it
_EXTENSION_PACKAGES = {
    "ducklake": ("duckdb_extension_ducklake", "ducklake"),
    "sqlite_scanner": ("duckdb_extension_sqlite", "sqlite"),
    "postgres_scanner": ("duckdb_extension_postgres", "postgres"),
    "httpfs": ("duckdb_extension_httpfs", "httpfs"),
}


def packaged_extension(name: str) -> Path:
    """Path of the signed extension binary shipped by its PyPI package, or a clear error naming the package."""
    package, stem = _EXTENSION_PACKAGES[name]
    try:
        module = importlib.import_module(package)
    except ImportError:
        dist = package.replace("_", "-")
        raise LakeError(
            f"DuckDB extension {name!r} is not installed: install the package {dist}=={DUCKDB_VERSION} "
            f"(make install does this)"
        ) from None
    path = Path(module.__file__).parent / "extensions" / f"v{DUCKDB_VERSION}" / f"{stem}.duckdb_extension"
    if not path.exists():
        raise LakeError(f"{path} is missing: reinstall {package.replace('_', '-')}=={DUCKDB_VERSION}")
    return path


def needed_extensions(settings: Settings) -> list[str]:
    names = ["ducklake"]
    names.append("postgres_scanner" if settings.catalog_uri.startswith("ducklake:postgres:") else "sqlite_scanner")
    if settings.data_path.startswith(("s3://", "gs://", "http://", "https://")):
        names.append("httpfs")
    return names


def install_extensions(con: duckdb.DuckDBPyConnection, settings: Settings) -> None:
    """Point DuckDB at the project's extension folder and install there, from the packaged files, what is missing."""
    ext_dir = settings.extension_dir
    ext_dir.mkdir(parents=True, exist_ok=True)
    con.execute("SET extension_directory = ?", [str(ext_dir)])
    # Never let DuckDB try the network: an unknown extension must fail here, not hang on a download.
    con.execute("SET autoinstall_known_extensions = false")
    installed = {
        row[0]
        for row in con.execute(
            "SELECT extension_name FROM duckdb_extensions() WHERE installed AND install_path <> ''"
        ).fetchall()
    }
    for name in needed_extensions(settings):
        if name not in installed:
            con.execute(f"INSTALL {literal(str(packaged_extension(name)))}")
        con.execute(f"LOAD {name}")
