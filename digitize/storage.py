"""Object storage behind one small interface: S3 (MinIO, SeaweedFS, any S3) or a local folder."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlparse

import urllib3

from pipeline import atomic
from pipeline.errors import ConfigError, DigitizeError, ExitCode, InputError, TransientError, writing_to

# Object keys come from station PCs and become paths in a work folder: nothing that could
# climb out of a folder or hide, and nothing a file system (255 bytes a name) or S3 (1024
# bytes a key, less the store's own prefix) cannot hold.
MAX_KEY_BYTES = 900
MAX_NAME_BYTES = 255
# Uploads below this are single-part, so their ETag is their MD5 and can be checked.
PART_SIZE = 64 * 1024 * 1024


class StorageError(TransientError):
    """Object storage did not answer or failed; worth a retry."""


class StorageDenied(DigitizeError):
    """Object storage refused the credentials (wrong keys) or the request (no permission): a retry cannot help."""

    exit_code = ExitCode.NOPERM


# S3 error codes that mean "not you" or "not allowed", as opposed to a failure worth a retry.
DENIED_CODES = frozenset({
    "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled",
    "InvalidToken", "ExpiredToken", "AccountProblem",
})  # fmt: skip


class UnsafeKey(InputError):
    """An object key that could escape its folder, hide, or not fit; shown with its control characters escaped."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(key, reason)
        self.key = printable_key(key)
        self.args = (f"{self.key}: {reason}",)


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    modified: datetime


def key_problem(key: str) -> str | None:
    """Why `key` must not be used as an object key or a relative path, or None when it may."""
    if not key:
        return "empty"
    try:
        size = len(key.encode())
    except UnicodeEncodeError:
        return "not valid UTF-8"
    if key.startswith("/"):
        return "an absolute path"
    if any(ch < " " or ch == "\x7f" for ch in key):
        return "a control character"
    if "\\" in key:
        return "a backslash"
    parts = key.split("/")
    if any(part in (".", "..") for part in parts):
        return "a '.' or '..' component"
    if "" in parts[:-1]:
        return "an empty component ('//')"
    if size > MAX_KEY_BYTES:
        return f"longer than {MAX_KEY_BYTES} bytes"
    if any(len(part.encode()) > MAX_NAME_BYTES for part in parts):
        return f"a component longer than {MAX_NAME_BYTES} bytes"
    return None


def check_key(key: str) -> str:
    problem = key_problem(key)
    if problem:
        raise UnsafeKey(key, f"unsafe object key: {problem}")
    return key


def printable_key(key: str, *, limit: int = 120) -> str:
    """A key fit for one line of a log or a terminal: control characters escaped, long keys cut."""
    shown = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in key)
    return shown if len(shown) <= limit else f"{shown[:limit]}… ({len(key.encode('utf-8', 'surrogateescape'))} bytes)"


class Store(ABC):
    """Keys are relative to the location the store was opened at."""

    url: str

    @abstractmethod
    def list(self, prefix: str = "") -> list[StoredObject]: ...

    @abstractmethod
    def download(self, key: str, dest: Path) -> None: ...

    @abstractmethod
    def upload(self, key: str, src: Path) -> None:
        """Upload and verify: the stored object has the file's size and MD5, or this raises."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def read_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def stat(self, key: str) -> StoredObject | None: ...

    @abstractmethod
    def delete(self, key: str) -> None: ...

    def exists(self, key: str) -> bool:
        return self.stat(key) is not None

    def children(self, prefix: str = "") -> list[str]:
        """The names one level below `prefix` ("a/" for a folder, "b" for an object), without listing deeper."""
        return sorted({o.key[len(prefix):].split("/", 1)[0] + ("/" if "/" in o.key[len(prefix):] else "") for o in self.list(prefix)})

    def forget_folder(self, prefix: str) -> None:
        """Remove what is left of the emptied folder `prefix`; object stores have no folders to leave."""

    def copy(self, source: str, dest: str) -> None:
        """Copy one object to another key of this store, whole or not at all."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix="digitize-copy-") as tmp:
            local = Path(tmp) / "object"
            self.download(source, local)
            self.upload(dest, local)

    def check_access(self) -> None:
        """Fail now, as one line, when the store will not answer or refuses us; a folder is checked on use."""


def md5_file(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class LocalStore(Store):
    """A folder: the embedded default, so a single machine needs no services."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.url = str(self.root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        if self.root not in path.parents:
            raise UnsafeKey(key, "resolves outside the store")
        return path

    def list(self, prefix: str = "") -> list[StoredObject]:
        found = []
        # Walk only the folder the prefix names, so listing one batch does not cost the whole store
        # (a prefix no key may have, such as a station folder named with a control character, walks it all).
        within = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        folder = self.root / within if within and key_problem(within) is None else self.root
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.name.startswith(atomic.TEMP_PREFIX):
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    stat = path.stat()
                    found.append(StoredObject(key, stat.st_size, datetime.fromtimestamp(stat.st_mtime, timezone.utc)))
        return found

    def download(self, key: str, dest: Path) -> None:
        with writing_to(dest.parent):
            shutil.copyfile(self._path(key), dest)

    def upload(self, key: str, src: Path) -> None:
        target = self._path(key)
        with atomic.replacing(target) as fh, open(src, "rb") as source:
            shutil.copyfileobj(source, fh)
            fh.flush()
            if md5_file(Path(fh.name)) != md5_file(src):
                raise StorageError(f"{self.url}/{key}: copy does not match its source")

    def put_bytes(self, key: str, data: bytes) -> None:
        atomic.write_bytes(self._path(key), data)

    def read_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def stat(self, key: str) -> StoredObject | None:
        path = self._path(key)
        if not path.is_file():
            return None
        st = path.stat()
        return StoredObject(key, st.st_size, datetime.fromtimestamp(st.st_mtime, timezone.utc))

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def copy(self, source: str, dest: str) -> None:
        with atomic.replacing(self._path(dest)) as fh, open(self._path(source), "rb") as original:
            shutil.copyfileobj(original, fh)

    def forget_folder(self, prefix: str) -> None:
        # Empty folders would be walked by every later listing of their parent.
        folder = self._path(prefix.rstrip("/"))
        for path in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True) + [folder]:
            try:
                path.rmdir()
            except OSError:  # not empty (something arrived meanwhile), or already gone
                pass

    def children(self, prefix: str = "") -> list[str]:
        folder = self.root / check_key(prefix.rstrip("/")) if prefix else self.root
        if not folder.is_dir():
            return []
        return sorted(p.name + "/" if p.is_dir() else p.name for p in folder.iterdir() if not p.name.startswith(atomic.TEMP_PREFIX))


class S3Store(Store):
    """Any S3 API through the MinIO SDK. Credentials never leave this object."""

    def __init__(self, bucket: str, prefix: str, *, endpoint: str, access_key: str, secret_key: str, secure: bool) -> None:
        from minio import Minio  # only S3 locations need the SDK

        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.endpoint = endpoint
        self._client = Minio(endpoint, access_key=access_key, secret_key=secret_key, secure=secure, http_client=_http_client())
        from minio.error import S3Error

        try:
            with self._errors("bucket check"):
                if not self._client.bucket_exists(bucket):
                    self._client.make_bucket(bucket)
        except (StorageError, StorageDenied) as exc:
            # A least-privilege identity (a station may only write under its own prefix, see
            # deploy/minio-policies/) may not look at the bucket itself; its first object
            # request then says whether it may go on.
            # BucketAlreadyOwnedByYou: another batch of this run made it first (or a server just
            # restarted answered "no such bucket" a moment too early); it is there, which is the point.
            if not (isinstance(exc.__cause__, S3Error) and exc.__cause__.code in ("AccessDenied", "BucketAlreadyOwnedByYou")):
                raise

    def _name(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _errors(self, what: str):
        return _s3_errors(f"{self.url}: {what}", endpoint=self.endpoint)

    def check_access(self) -> None:
        # One page of the top level: cheap, and it needs what the nightly run's listing needs.
        start = f"{self.prefix}/" if self.prefix else None
        with self._errors("listing"):
            next(iter(self._client.list_objects(self.bucket, prefix=start)), None)

    def list(self, prefix: str = "") -> list[StoredObject]:
        # Not checked as a key: a prefix cannot climb out of a bucket, and the nightly listing
        # must see what stations put under unsafe names, to refuse it by name.
        start = f"{self.prefix}/{prefix}" if self.prefix else prefix
        with self._errors(f"listing {prefix or '/'}"):
            objects = self._client.list_objects(self.bucket, prefix=start, recursive=True)
            cut = len(self.prefix) + 1 if self.prefix else 0
            return [StoredObject(o.object_name[cut:], o.size, o.last_modified) for o in objects if not o.is_dir]

    def children(self, prefix: str = "") -> list[str]:
        start = self._name(prefix) if prefix else (f"{self.prefix}/" if self.prefix else "")
        with self._errors(f"listing {prefix or '/'}"):
            return sorted(o.object_name[len(start):] for o in self._client.list_objects(self.bucket, prefix=start))

    def forget_folder(self, prefix: str) -> None:
        # Some S3 servers keep folders (SeaweedFS: each emptied one still costs every later listing
        # of its parent) and remove one when its key with the trailing '/' is deleted; for the others
        # that key is not there, and deleting a missing key succeeds.
        with self._errors(f"deleting {prefix}"):
            self._client.remove_object(self.bucket, self._name(prefix))

    def copy(self, source: str, dest: str) -> None:
        from minio.commonconfig import CopySource

        # Server-side: the object's bytes never leave the store (single request up to 5 GiB).
        with self._errors(f"copying {source} to {dest}"):
            self._client.copy_object(self.bucket, self._name(dest), CopySource(self.bucket, self._name(source)))

    def download(self, key: str, dest: Path) -> None:
        # A full or read-only local disk is an OutputError naming it, not an S3 failure.
        with self._errors(f"downloading {key}"), writing_to(dest.parent):
            self._client.fget_object(self.bucket, self._name(key), str(dest))

    def upload(self, key: str, src: Path) -> None:
        expected = md5_file(src)
        with self._errors(f"uploading {key}"):
            self._client.fput_object(self.bucket, self._name(key), str(src), part_size=PART_SIZE)
            stat = self._client.stat_object(self.bucket, self._name(key))
        if stat.size != src.stat().st_size or (stat.etag or "").strip('"') != expected:
            raise StorageError(f"{self.url}/{key}: stored object does not match the upload (size or MD5)")

    def put_bytes(self, key: str, data: bytes) -> None:
        import io

        with self._errors(f"writing {key}"):
            self._client.put_object(self.bucket, self._name(key), io.BytesIO(data), len(data))

    def read_bytes(self, key: str) -> bytes:
        with self._errors(f"reading {key}"):
            response = self._client.get_object(self.bucket, self._name(key))
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

    def stat(self, key: str) -> StoredObject | None:
        from minio.error import S3Error

        try:
            with self._errors(f"checking {key}"):
                st = self._client.stat_object(self.bucket, self._name(key))
        except StorageError as exc:
            if isinstance(exc.__cause__, S3Error) and exc.__cause__.code in ("NoSuchKey", "NoSuchObject"):
                return None
            raise
        return StoredObject(key, st.size, st.last_modified)

    def delete(self, key: str) -> None:
        with self._errors(f"deleting {key}"):
            self._client.remove_object(self.bucket, self._name(key))


# The SDK's own defaults wait 5 minutes to connect and for each answer, so an S3 that is down
# or hung would hold a batch for half an hour. Requests fail fast instead, after a few quick
# retries for a blip (urllib3 waits 0, 2, 4, 8 s); the task retries the batch after longer delays
# (service.retry_delays_s). Read timeouts are per socket read, so large objects are not limited.
CONNECT_TIMEOUT_S = 10
READ_TIMEOUT_S = 120
REQUEST_RETRIES = 4


def _http_client():
    """The SDK's connection pool with our timeouts and retries, and its usual TLS checks."""
    import certifi

    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S), maxsize=10,
        cert_reqs="CERT_REQUIRED", ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=_QuietRetry(total=REQUEST_RETRIES, backoff_factor=1.0, backoff_max=8.0, status_forcelist=[500, 502, 503, 504]),
    )  # fmt: skip


class _QuietRetry(urllib3.Retry):
    """Our pools' retry policy, told apart so that its retries are not each logged as a warning."""


def _not_our_retry(record: logging.LogRecord) -> bool:
    """urllib3 warns on every retry with the whole exception; for our pools the final error says it once."""
    args = record.args if isinstance(record.args, tuple) else ()
    return not (args and isinstance(args[0], _QuietRetry))


logging.getLogger("urllib3.connectionpool").addFilter(_not_our_retry)


def _unreachable_reason(exc: BaseException) -> str:
    """"Connection refused", "timed out", ...: the socket's own words, without urllib3's object reprs."""
    from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NameResolutionError

    reason = exc.reason if isinstance(exc, MaxRetryError) and exc.reason is not None else exc
    if isinstance(reason, NameResolutionError):
        return "name not resolved"
    cause = reason.__cause__ or reason.__context__
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    if isinstance(reason, ConnectTimeoutError):
        return "connection timed out"
    return type(reason).__name__


class _s3_errors:
    """Turn SDK and network failures into StorageError (or StorageDenied), without credentials in the message."""

    def __init__(self, what: str, *, endpoint: str) -> None:
        self.what, self.endpoint = what, endpoint

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None or isinstance(exc, DigitizeError):
            return False
        from minio.error import MinioException, S3Error
        from urllib3.exceptions import ConnectTimeoutError, HTTPError, MaxRetryError

        if isinstance(exc, S3Error):
            if exc.code in DENIED_CODES:
                raise StorageDenied(f"{self.what}: {exc.code} (check MINIO_ACCESS_KEY, MINIO_SECRET_KEY and the access policy)") from exc
            raise StorageError(f"{self.what}: {exc.code}") from exc
        reason = exc.reason if isinstance(exc, MaxRetryError) else exc
        if isinstance(reason, ConnectTimeoutError):
            raise StorageError(f"cannot reach S3 endpoint {self.endpoint}: {_unreachable_reason(exc)} ({self.what})") from exc
        if isinstance(exc, MinioException | HTTPError | OSError):
            raise StorageError(f"{self.what}: {type(exc).__name__}") from exc
        return False


def open_store(url: str, env: Mapping[str, str]) -> Store:
    """`s3://bucket/prefix` (endpoint and credentials from MINIO_*), or a folder path / file:// URL."""
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        missing = [name for name in ("MINIO_ENDPOINT", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY") if not env.get(name)]
        if missing:
            raise ConfigError(f"{url}: S3 locations need {', '.join(missing)} in the environment")
        secure = env.get("MINIO_SECURE", "true").strip().lower()
        if secure not in ("true", "false"):
            raise ConfigError(f"MINIO_SECURE must be true or false, not {secure!r}")
        return S3Store(
            parsed.netloc, parsed.path, endpoint=env["MINIO_ENDPOINT"], access_key=env["MINIO_ACCESS_KEY"],
            secret_key=env["MINIO_SECRET_KEY"], secure=secure == "true",
        )  # fmt: skip
    if parsed.scheme in ("", "file"):
        return LocalStore(Path(parsed.path if parsed.scheme == "file" else url))
    raise ConfigError(f"{url}: unsupported location; use s3://bucket/prefix or a folder")
