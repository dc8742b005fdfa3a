"""Throwaway servers for the scale-out tests: a PostgreSQL cluster from Debian's package and moto's S3 server.

Both bind 127.0.0.1 on a free port and are torn down by their context managers. PostgreSQL refuses to run as root, so
the cluster belongs to the ``postgres`` system user (Debian's package creates it) in a temp folder that user owns.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from exchange_sim.testing import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _pg_tool(name: str) -> str:
    found = shutil.which(name) or (str(PG_BIN / name) if (PG_BIN / name).exists() else None)
    if not found:
        raise RuntimeError(f"{name} not found: install Debian's postgresql package (make system-deps does this)")
    return found


def _as_postgres(argv: list[str]) -> list[str]:
    # root cannot start postgres; any other user runs it as itself
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@dataclass(frozen=True)
class Postgres:
    port: int
    user: str

    def libpq(self, dbname: str) -> str:
        """A libpq keyword string (what DuckDB's postgres extension takes)."""
        return f"dbname={dbname} host=127.0.0.1 port={self.port} user={self.user}"

    def url(self, dbname: str) -> str:
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> None:
        subprocess.run(_as_postgres([_pg_tool("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, name]),
                       check=True, capture_output=True, text=True)


@contextlib.contextmanager
def running_postgres() -> Iterator[Postgres]:
    """initdb + pg_ctl start a cluster listening on 127.0.0.1 only (trust auth: loopback, throwaway data)."""
    root = Path(tempfile.mkdtemp(prefix="cryptoflow-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", free_port()
    user = "postgres" if os.geteuid() == 0 else os.environ.get("USER", "postgres")
    subprocess.run(_as_postgres([_pg_tool("initdb"), "-D", str(data), "-U", user, "--auth=trust", "-E", "UTF8"]),
                   check=True, capture_output=True, text=True)
    options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root} -c fsync=off"
    start = subprocess.run(_as_postgres([_pg_tool("pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-t", "60",
                                         "-o", options, "start"]), capture_output=True, text=True)
    if start.returncode != 0:
        log = (root / "log").read_text() if (root / "log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"pg_ctl start failed: {start.stderr}\n{log}")
    try:
        yield Postgres(port=port, user=user)
    finally:
        subprocess.run(_as_postgres([_pg_tool("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                       capture_output=True, text=True)
        shutil.rmtree(root, ignore_errors=True)


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    process: subprocess.Popen

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")


# The bucket the lake tests write their Parquet to (each test under its own prefix).
BUCKET = "cryptoflow-lake"
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


@contextlib.contextmanager
def running_s3() -> Iterator[S3Server]:
    """moto's S3-compatible server (``moto_server``) on 127.0.0.1; waits until it answers."""
    port = free_port()
    moto = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(endpoint, timeout=2)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.2)
        yield S3Server(endpoint=endpoint, process=proc)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
