"""How an answer is written: JSON for people and pages, CSV, Arrow IPC and Parquet for programs (docs/api.md).

Bulk formats never hold a whole answer in memory: DuckDB hands the rows over as Arrow record batches of
``BATCH_ROWS`` rows and each batch is encoded into a spooled temporary file (memory up to ``SPOOL_MEMORY_BYTES``,
then disk) before the next one is read. The lake session ends as soon as the last batch is written, and the file is
then streamed to the client at the client's pace: a slow download never holds a lake session (ADR 0020).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import IO, Any

import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from starlette.responses import Response, StreamingResponse

from cryptoflow_serving.errors import ApiError, bad_parameter

MEDIA_TYPES = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "arrow": "application/vnd.apache.arrow.stream",
    "parquet": "application/vnd.apache.parquet",
}
BULK = ("csv", "arrow", "parquet")
BATCH_ROWS = 10_000
SPOOL_MEMORY_BYTES = 8 * 1024 * 1024
_SEND_BYTES = 64 * 1024


def json_bytes(content: Any) -> bytes:
    """orjson: datetimes as ISO 8601 with their zone, dates as YYYY-MM-DD, NaN/inf as null (JSON has neither)."""
    return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json_bytes(content)


def negotiate(fmt: str | None, accept: str | None) -> str:
    """The answer's format: the ``format`` parameter, else the first Accept media type we can write, else JSON."""
    if fmt is not None:
        if fmt not in MEDIA_TYPES:
            raise bad_parameter("format", f"unknown format {fmt!r}: allowed {', '.join(MEDIA_TYPES)}")
        return fmt
    if not accept:
        return "json"
    by_type = {v.split(";")[0]: k for k, v in MEDIA_TYPES.items()}
    by_type["application/x-parquet"] = "parquet"
    wanted = [part.split(";")[0].strip().lower() for part in accept.split(",")]
    for media in wanted:
        if media in by_type:
            return by_type[media]
        if media in ("*/*", "application/*", ""):
            return "json"
    raise ApiError(406, "not_acceptable", f"cannot answer {accept!r}: allowed {', '.join(sorted(by_type))} "
                   "(or format=json|csv|arrow|parquet)")


def spool(reader: pa.RecordBatchReader, fmt: str) -> tuple[IO[bytes], int, dict[str, Any] | None]:
    """Write ``reader``'s batches in ``fmt`` to a spooled file, one batch at a time; returns the file (rewound), the
    row count and the last row (for the next page's cursor)."""
    out = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES)
    rows, last = 0, None
    schema = reader.schema
    try:
        if fmt == "arrow":
            writer: Any = pa.ipc.new_stream(out, schema)
        elif fmt == "parquet":
            writer = pq.ParquetWriter(out, schema, compression="zstd")
        else:
            writer = pa_csv.CSVWriter(out, schema)
        with writer:
            for batch in reader:
                if batch.num_rows == 0:
                    continue
                if fmt == "parquet":
                    writer.write_batch(batch, row_group_size=BATCH_ROWS)
                else:
                    writer.write_batch(batch)
                rows += batch.num_rows
                last = batch.slice(batch.num_rows - 1).to_pylist()[0]
        out.seek(0)
    except BaseException:
        out.close()
        raise
    return out, rows, last


def file_response(out: IO[bytes], fmt: str, headers: dict[str, str]) -> StreamingResponse:
    """Send a spooled answer in pieces and close it afterwards (also when the client goes away mid-way)."""

    def pieces() -> Iterator[bytes]:
        try:
            while piece := out.read(_SEND_BYTES):
                yield piece
        finally:  # runs when the client went away mid-way too (the generator is closed)
            out.close()

    return StreamingResponse(pieces(), media_type=MEDIA_TYPES[fmt], headers=headers)
