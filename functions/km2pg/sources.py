"""Where export files come from: local files and folders, and S3 objects, as byte streams.

A file's identity for the ledger is its export key (``revisions/N.json``, wherever it sits) and
the MD5 of its content (decompressed), which is also the ETag S3 gives a plain single-part upload.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final, cast
from urllib.parse import unquote_plus

from botocore.exceptions import BotoCoreError, ClientError

from km2pg.errors import SourceError

_EXPORT_KEY: Final = re.compile(r"(?:^|/)revisions/(\d+)\.json(?:\.gz)?$")
_SKIPPED_NAMES: Final = frozenset({"index.csv", "status.csv"})
READ_CHUNK: Final = 1 << 20


def export_key(path: str) -> tuple[str, int]:
    """(``revisions/N.json``, N) for an export file; (file name, 0) for any other name."""
    match = _EXPORT_KEY.search(path)
    if match:
        return f"revisions/{int(match.group(1))}.json", int(match.group(1))
    name = path.rsplit("/", 1)[-1]
    return name.removesuffix(".gz"), 0


def is_export_name(path: str) -> bool:
    """Whether a path or key names a loadable file (``*.json`` or ``*.json.gz``)."""
    name = path.rsplit("/", 1)[-1]
    return name not in _SKIPPED_NAMES and name.endswith((".json", ".json.gz"))


def is_revision_key(key: str) -> bool:
    """Whether an S3 key is an export revision file (``.../revisions/N.json``)."""
    return _EXPORT_KEY.search(key) is not None


@dataclass(frozen=True)
class ExportFile:
    """One file to load: a local path, or an S3 object (``source`` is then ``s3://bucket``).

    Picklable (for ``--jobs``): an S3 client given here is not pickled; a new one is made.
    """

    source: str
    path: str
    size: int | None = None
    etag: str | None = None
    local: bool = False
    client: Any = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["client"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def open_raw(self) -> IO[bytes]:
        """Open the stored bytes (compressed when ``gzipped``) for streaming."""
        if self.local:
            return _open_local(Path(self.path))
        bucket = self.source.removeprefix("s3://")
        return _open_s3(self.client or s3_client(), bucket, self.path)

    @property
    def gzipped(self) -> bool:
        return self.path.endswith(".gz")

    @property
    def export_key(self) -> str:
        return export_key(self.path)[0]

    @property
    def revision(self) -> int:
        return export_key(self.path)[1]

    @property
    def known_md5(self) -> str | None:
        """The content MD5 when known without reading: a plain S3 ETag of an uncompressed object."""
        if self.etag and not self.gzipped and re.fullmatch(r"[0-9a-f]{32}", self.etag):
            return self.etag
        return None

    @property
    def label(self) -> str:
        return self.path if self.local else f"{self.source}/{self.path}"


class HashingReader(io.RawIOBase):
    """A raw stream that hashes (MD5) and counts the bytes read through it."""

    def __init__(self, inner: IO[bytes]) -> None:
        super().__init__()
        self._inner = inner
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._inner.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.md5.update(data)
        self.size += n
        return n

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            super().close()


class ContentStream:
    """The decompressed content of an export file as a buffered binary stream, hashed as read."""

    def __init__(self, file: ExportFile) -> None:
        try:
            raw = file.open_raw()
        except SourceError:
            raise
        except OSError as error:
            raise SourceError(f"cannot read {file.label}: {error.strerror or error}") from None
        inner = cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb")) if file.gzipped else raw
        self._hasher = HashingReader(inner)
        self.stream: IO[bytes] = io.BufferedReader(self._hasher, buffer_size=READ_CHUNK)
        self.file = file

    @property
    def md5(self) -> str:
        return self._hasher.md5.hexdigest()

    @property
    def bytes_read(self) -> int:
        return self._hasher.size

    def close(self) -> None:
        self.stream.close()

    def __enter__(self) -> ContentStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


READ_ERRORS: Final = (OSError, EOFError, zlib.error)
"""What reading a damaged or vanishing file raises (gzip.BadGzipFile is an OSError)."""


def read_error(file: ExportFile, error: BaseException) -> SourceError:
    """A one-line SourceError for a failure while reading ``file``."""
    if isinstance(error, SourceError):
        return error
    detail = str(error).splitlines()[0] if str(error) else type(error).__name__
    return SourceError(f"cannot read {file.label}: {detail}")


def content_md5(file: ExportFile) -> str:
    """Read a whole file once to hash its content (cheap next to parsing it)."""
    with ContentStream(file) as content:
        try:
            while content.stream.read(READ_CHUNK):
                pass
        except READ_ERRORS as error:
            raise read_error(file, error) from None
        return content.md5


# ---------------------------------------------------------------------------------------------
# Local files


def local_file(path: Path) -> ExportFile:
    resolved = path.resolve()
    try:
        size = resolved.stat().st_size
    except OSError as error:
        raise SourceError(f"cannot read {path}: {error.strerror}") from None
    return ExportFile(source=str(resolved.parent), path=str(resolved), size=size, local=True)


def _open_local(path: Path) -> IO[bytes]:
    try:
        return open(path, "rb", buffering=0)
    except OSError as error:
        raise SourceError(f"cannot read {path}: {error.strerror}") from None


def discover_local(path: Path) -> list[ExportFile]:
    """A file, or every ``*.json``/``*.json.gz`` under a folder (recursively), in revision order."""
    if not path.exists():
        raise SourceError(f"no such file or folder: {path}")
    if path.is_file():
        return [local_file(path)]
    found = [
        local_file(Path(root) / name)
        for root, _dirs, names in os.walk(path)
        for name in names
        if is_export_name(name)
    ]
    return sorted(found, key=_load_order)


def _load_order(file: ExportFile) -> tuple[int, str]:
    return file.revision, file.path


# ---------------------------------------------------------------------------------------------
# S3


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, prefix)."""
    rest = url.removeprefix("s3://")
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise SourceError(f"not an S3 URL with a bucket: {url}")
    return bucket, prefix


def s3_object(
    client: Any, bucket: str, key: str, size: int | None = None, etag: str | None = None
) -> ExportFile:
    """An S3 object as an export file, streamed when opened (never read whole into memory)."""
    return ExportFile(
        source=f"s3://{bucket}",
        path=key,
        size=size,
        etag=etag.strip('"') if etag else None,
        client=client,
    )


def s3_key_from_event(key: str) -> str:
    """Keys in S3 event notifications are URL-encoded, with '+' for spaces."""
    return unquote_plus(key)


def _open_s3(client: Any, bucket: str, key: str) -> IO[bytes]:
    try:
        body = client.get_object(Bucket=bucket, Key=key)["Body"]
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "error")
        raise SourceError(f"cannot read s3://{bucket}/{key}: {code}") from None
    except BotoCoreError as error:
        raise SourceError(f"cannot read s3://{bucket}/{key}: {error}") from None
    return cast(IO[bytes], _StreamingBodyReader(body))


class _StreamingBodyReader(io.RawIOBase):
    """Adapts botocore's StreamingBody to a raw stream that io.BufferedReader can wrap."""

    def __init__(self, body: Any) -> None:
        super().__init__()
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._body.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        return n

    def close(self) -> None:
        try:
            self._body.close()
        finally:
            super().close()


def discover_s3(url: str, client: Any | None = None) -> list[ExportFile]:
    """Every export file under ``s3://bucket/prefix``, in revision order."""
    bucket, prefix = parse_s3_url(url)
    if client is None:
        client = s3_client()
    found = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                if is_export_name(item["Key"]):
                    found.append(
                        s3_object(client, bucket, item["Key"], item.get("Size"), item.get("ETag"))
                    )
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "error")
        raise SourceError(f"cannot list {url}: {code}") from None
    except BotoCoreError as error:
        raise SourceError(f"cannot list {url}: {error}") from None
    if not found:
        raise SourceError(f"no export files under {url}")
    return sorted(found, key=_load_order)


def s3_client() -> Any:
    import boto3  # noqa: PLC0415 - slow to import, and only S3 sources need it

    return boto3.client("s3")


def discover(paths: Iterable[str], s3: Any | None = None) -> Iterator[ExportFile]:
    """Expand command-line paths (files, folders, ``s3://`` URLs) into export files."""
    for path in paths:
        if path.startswith("s3://"):
            yield from discover_s3(path, s3)
        else:
            yield from discover_local(Path(path))
