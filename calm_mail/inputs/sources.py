"""Where input bytes come from: a local path or an ``s3://bucket/key`` URI, gzip or not.

Everything is streamed: an S3 object body is read in buffered chunks, never whole. boto3
finds its endpoint (``AWS_ENDPOINT_URL``), credentials and region itself, so an S3-compatible
store or moto's server works with no option here. Failures become `InputError` naming the path.
"""

from __future__ import annotations

import gzip
import io
import os
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, cast

from isal import igzip, isal_zlib

from calm_mail.errors import InputError

GZIP_MAGIC = b"\x1f\x8b"
BUFFER_SIZE = 1 << 20
# A bad deflate block raises zlib's or ISA-L's own error, neither of them an OSError.
# (isal's stub types its error as an instance, hence the cast.)
_ISAL_ERROR = cast(type[Exception], isal_zlib.error)
READ_ERRORS = (OSError, EOFError, gzip.BadGzipFile, zlib.error, _ISAL_ERROR)

_clients: dict[tuple[str | None, str | None], Any] = {}
_clients_lock = threading.Lock()


def is_s3(path: str) -> bool:
    return path.startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key). The key may be empty (a whole bucket)."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket:
        raise InputError("not an S3 URI: expected s3://bucket/key", path=uri)
    return bucket, key


def s3_client() -> Any:
    """A boto3 S3 client, created on first use and cached per endpoint setting."""
    key = (os.environ.get("AWS_ENDPOINT_URL"), os.environ.get("AWS_ENDPOINT_URL_S3"))
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            import boto3  # imported lazily: local-only runs never pay for it

            client = _clients[key] = boto3.client("s3")
        return client


class _BodyReader(io.RawIOBase):
    """Raw-stream adapter over a botocore StreamingBody, so io.BufferedReader can wrap it."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


def _s3_error(exc: Exception, uri: str) -> InputError:
    response = getattr(exc, "response", None) or {}
    code = response.get("Error", {}).get("Code", "")
    what = {
        "NoSuchKey": "no such object",
        "404": "no such object",
        "NoSuchBucket": "no such bucket",
        "AccessDenied": "access denied",
        "403": "access denied",
    }.get(str(code), str(exc))
    return InputError(f"cannot read from S3: {what}", path=uri)


def _open_raw(path: str) -> io.BufferedReader:
    if is_s3(path):
        from botocore.exceptions import BotoCoreError, ClientError  # S3 only: botocore is slow

        bucket, key = split_s3(path)
        try:
            body = s3_client().get_object(Bucket=bucket, Key=key)["Body"]
        except (BotoCoreError, ClientError) as exc:
            raise _s3_error(exc, path) from exc
        return io.BufferedReader(_BodyReader(body), buffer_size=BUFFER_SIZE)
    try:
        return cast(io.BufferedReader, open(path, "rb", buffering=BUFFER_SIZE))
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise InputError(f"cannot read: {path_problem(exc)}", path=path) from exc


def path_problem(exc: OSError | ValueError) -> str:
    """Why a local path cannot be used, in the OS's words ("File name too long")."""
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def open_source(path: str) -> io.BufferedIOBase:
    """Open a local file or S3 object as a binary stream; gunzip ``*.gz`` or gzip-magic data.

    The caller closes the stream (use it as a context manager). Errors while *opening* raise
    `InputError`; errors while *reading* (a truncated gzip, a dropped connection) surface as
    the stdlib errors in `READ_ERRORS`, which readers turn into `InputError` via `read_error`.
    """
    raw = _open_raw(path)
    try:
        head = raw.peek(2)[:2]
    except READ_ERRORS as exc:
        raw.close()
        raise read_error(exc, path) from exc
    if path.endswith(".gz") or head == GZIP_MAGIC:
        return _Gunzip(raw)
    return raw


class _Gunzip(io.BufferedReader):
    """A gzip stream inflated by ISA-L (python-isal, a faster inflate than the stdlib's zlib),
    read through a 1 MiB buffer (the stdlib's 8 KiB one splits every long Personalize line in
    two reads); closing it closes the file under it too."""

    def __init__(self, raw: io.BufferedReader) -> None:
        inflated = igzip.IGzipFile(fileobj=raw, mode="rb")  # type: ignore[no-untyped-call]
        super().__init__(inflated, buffer_size=BUFFER_SIZE)
        self._file = raw

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._file.close()


def read_error(exc: BaseException, path: str) -> InputError:
    """The InputError for a failure in the middle of reading `path`."""
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return InputError(f"cannot read: {reason}", path=path)


def open_text(path: str) -> io.TextIOWrapper:
    """`open_source` decoded as UTF-8 (a BOM is dropped), with newlines left to the csv module."""
    return io.TextIOWrapper(cast(IO[bytes], open_source(path)), encoding="utf-8-sig", newline="")


def list_prefix(prefix: str, suffixes: tuple[str, ...]) -> list[str]:
    """Sorted files ending in one of `suffixes` under a local folder or an S3 prefix.

    A local folder is searched recursively; a local file that has a matching suffix is returned
    alone. An S3 prefix matches keys the way S3 does (``in/users`` also matches
    ``in/users_test/``), so end folder prefixes with ``/``. An empty result is not an error
    here; a missing local folder or S3 bucket is, and so is a path the OS refuses (a name
    too long): `InputError` naming the path.
    """
    if is_s3(prefix):
        return sorted(uri for uri in _list_s3(prefix) if uri.endswith(suffixes))
    try:
        return _list_local(prefix, suffixes)
    except (OSError, ValueError) as exc:  # a name too long, a loop of links, a NUL
        raise InputError(f"cannot list: {path_problem(exc)}", path=prefix) from exc


def _list_local(prefix: str, suffixes: tuple[str, ...]) -> list[str]:
    root = Path(prefix)
    if root.is_file():
        return [prefix] if prefix.endswith(suffixes) else []
    if not root.is_dir():
        raise InputError("no such folder", path=prefix)
    found = (p for p in root.rglob("*") if p.is_file() and p.name.endswith(suffixes))
    return sorted(str(p) for p in found)


def _list_s3(prefix: str) -> Iterator[str]:
    from botocore.exceptions import BotoCoreError, ClientError  # S3 only: botocore is slow

    bucket, key_prefix = split_s3(prefix)
    pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key_prefix)
    try:
        for page in pages:
            for entry in page.get("Contents", ()):
                yield f"s3://{bucket}/{entry['Key']}"
    except (BotoCoreError, ClientError) as exc:
        raise _s3_error(exc, prefix) from exc
