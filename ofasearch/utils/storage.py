"""Where a search's results live: a path on a file system, or an object-store URI (``s3://...``).

Ray Tune and Ray Train write their experiments through pyarrow filesystems, so ``storage:``
accepts what they accept. Local locations stay :class:`pathlib.Path` (atomic renames, ``O_EXCL``
claims); a URI becomes an :class:`ObjectPath`, the few ``Path`` methods a results folder needs, on
the pyarrow filesystem of that URI. Code that reads or writes a results folder takes either one
(:data:`Location`) and never needs to know which.

Credentials: a URI may carry them (``s3://KEY:SECRET@bucket/x``, ``https://user:pass@host``);
ofasearch uses them but never writes them: :func:`redact_uri` gives the text for files and log
lines (``s3://***@bucket/x``). A redacted URI read back (a ``spec.yaml`` run again) takes its
credentials from the environment (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` and the other
variables pyarrow reads), as object stores normally do.

S3 endpoints: pyarrow reads the credentials from the usual ``AWS_*`` variables, but not the
endpoint (apache/arrow#49643), so ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` (what the AWS
CLI and boto3 honour, e.g. for MinIO) are applied here; ``?endpoint_override=`` in the URI
itself also works (pyarrow's own URI option).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, parse_qsl, unquote, urlencode, urlsplit, urlunsplit

if TYPE_CHECKING:
    import pyarrow.fs

__all__ = [
    "URI_SCHEMES",
    "Location",
    "ObjectPath",
    "ObjectStat",
    "as_location",
    "is_uri",
    "location_digest",
    "ray_storage",
    "redact_uri",
    "uri_problem",
    "without_redacted_credentials",
]

# The schemes of pyarrow's filesystems (pyarrow.fs.FileSystem.from_uri): what Ray's storage_path takes.
URI_SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")


REDACTED = "***"  # what stands for a URI's credentials in what ofasearch writes


# query options that hold a secret (pyarrow's S3 URIs take ?access_key=&secret_key=&session_token=)
_SECRET_OPTIONS = ("key", "secret", "token", "password", "credential", "signature")


def redact_uri(uri: str) -> str:
    """``uri`` with the credentials before ``@`` replaced by ``***`` (``s3://***@bucket/x``), and
    so the values of query options that hold secrets; a path, or a URI without credentials, as
    it is."""
    if "://" not in uri:
        return uri
    parts = urlsplit(uri)
    userinfo, at, host = parts.netloc.rpartition("@")
    if at and userinfo != REDACTED:
        parts = parts._replace(netloc=f"{REDACTED}@{host}")
    options = parse_qsl(parts.query, keep_blank_values=True)
    if any(word in key.lower() for key, _ in options for word in _SECRET_OPTIONS):
        hidden = [(k, REDACTED if any(w in k.lower() for w in _SECRET_OPTIONS) else v) for k, v in options]
        parts = parts._replace(query=urlencode(hidden, safe="*/:"))
    return urlunsplit(parts)


def without_redacted_credentials(uri: str) -> str:
    """``uri`` without the ``***`` :func:`redact_uri` left in it (before ``@``, as an option's
    value): the client then takes the credentials from the environment instead of sending ``***``."""
    if "://" not in uri:
        return uri
    parts = urlsplit(uri)
    userinfo, at, host = parts.netloc.rpartition("@")
    if at and userinfo == REDACTED:
        parts = parts._replace(netloc=host)
    options = parse_qsl(parts.query, keep_blank_values=True)
    if any(value == REDACTED for _, value in options):
        parts = parts._replace(query=urlencode([(k, v) for k, v in options if v != REDACTED], safe="/:"))
    return urlunsplit(parts)


def is_uri(value: Any) -> bool:
    """A ``scheme://`` location (an :class:`ObjectPath` or its text), not a file-system path."""
    return isinstance(value, ObjectPath) or "://" in str(value)


def uri_problem(text: str) -> str | None:
    """Why ``text`` is not a storage URI ofasearch can use (None: it is, or it is a plain path)."""
    if "://" not in text:
        return None
    scheme = urlsplit(text).scheme.lower()
    if scheme == "file":
        return None
    if scheme not in URI_SCHEMES:
        allowed = ", ".join(f"{s}://" for s in URI_SCHEMES)
        return f"{redact_uri(text)!r}: unknown URI scheme {scheme!r}; allowed: a path, file://, {allowed}"
    if not urlsplit(text).netloc:
        return f"{text!r}: no bucket (or host) after {scheme}://"
    return None


@dataclass(frozen=True)
class ObjectStat:
    """The fields of ``os.stat_result`` an object store has."""

    st_size: int
    st_mtime: float


def _file_types() -> Any:
    import pyarrow.fs

    return pyarrow.fs.FileType


class ObjectPath:
    """A file or folder on a pyarrow filesystem, with the ``pathlib.Path`` methods results use.

    Object stores have no rename: :meth:`write_bytes` is one PUT, which readers see whole or not
    at all (what ``atomic_write`` gets from a rename on a file system)."""

    def __init__(self, fs: pyarrow.fs.FileSystem, path: str, prefix: str, query: str = ""):
        self.fs, self.fs_path, self._prefix, self._query = fs, path.rstrip("/"), prefix, query

    @classmethod
    def from_uri(cls, uri: str) -> ObjectPath:
        parts = urlsplit(uri)
        fs, path = _filesystem(uri)
        return cls(fs, path, f"{parts.scheme}://", parts.query)

    def _at(self, path: str) -> ObjectPath:
        return ObjectPath(self.fs, path, self._prefix, self._query)

    def __truediv__(self, name: str | os.PathLike) -> ObjectPath:
        return self._at(str(PurePosixPath(self.fs_path) / os.fspath(name)))

    @property
    def name(self) -> str:
        return PurePosixPath(self.fs_path).name

    @property
    def parent(self) -> ObjectPath:
        return self._at(str(PurePosixPath(self.fs_path).parent))

    def with_name(self, name: str) -> ObjectPath:
        return self.parent / name

    def resolve(self) -> ObjectPath:
        return self

    def __str__(self) -> str:
        return f"{self._prefix}{self.fs_path}" + (f"?{self._query}" if self._query else "")

    def __repr__(self) -> str:
        return f"ObjectPath({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectPath) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def _type(self) -> Any:
        return self.fs.get_file_info(self.fs_path).type

    def exists(self) -> bool:
        return self._type() != _file_types().NotFound

    def is_file(self) -> bool:
        return self._type() == _file_types().File

    def is_dir(self) -> bool:
        return self._type() == _file_types().Directory

    def stat(self) -> ObjectStat:
        """Size and modification time (what results readers ask of a file)."""
        info = self.fs.get_file_info(self.fs_path)
        if info.type == _file_types().NotFound:
            raise FileNotFoundError(2, "No such file or directory", str(self))
        return ObjectStat(info.size or 0, info.mtime.timestamp() if info.mtime else 0.0)

    def read_bytes(self) -> bytes:
        try:
            with self.fs.open_input_stream(self.fs_path) as f:
                return f.readall()
        except FileNotFoundError:
            raise FileNotFoundError(2, "No such file or directory", str(self)) from None

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> int:
        with self.fs.open_output_stream(self.fs_path) as f:
            f.write(data)
        return len(data)

    def write_text(self, text: str, encoding: str = "utf-8") -> int:
        return self.write_bytes(text.encode(encoding))

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        if self.is_dir() and not exist_ok:
            raise FileExistsError(str(self))
        self.fs.create_dir(self.fs_path, recursive=parents)

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.delete_file(self.fs_path)
        except FileNotFoundError:
            if not missing_ok:
                raise


Location = Path | ObjectPath


def _filesystem(uri: str) -> tuple[pyarrow.fs.FileSystem, str]:
    """pyarrow's filesystem of ``uri`` and the path on it; an S3 URI without its own
    ``endpoint_override`` uses ``$AWS_ENDPOINT_URL_S3`` / ``$AWS_ENDPOINT_URL`` when set."""
    import pyarrow.fs

    uri = without_redacted_credentials(uri)
    parts = urlsplit(uri)
    if parts.scheme == "s3" and "endpoint_override" not in parse_qs(parts.query):
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            where = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
            keys: dict[str, str] = {}
            if parts.username is not None:  # credentials in the URI win, as pyarrow's from_uri has it
                keys = {"access_key": unquote(parts.username), "secret_key": unquote(parts.password or "")}
            fs = pyarrow.fs.S3FileSystem(endpoint_override=where.netloc, scheme=where.scheme, region=region, **keys)
            return fs, (parts.netloc.rpartition("@")[2] + parts.path).rstrip("/")
    return pyarrow.fs.FileSystem.from_uri(uri)


def as_location(value: str | os.PathLike | ObjectPath) -> Location:
    """An :class:`ObjectPath` for a URI (``file://`` gives a Path), else a ``Path``."""
    if isinstance(value, ObjectPath | Path):
        return value
    text = os.fspath(value)
    if "://" not in text:
        return Path(text)
    if urlsplit(text).scheme == "file":
        return Path(urlsplit(text).path)
    return ObjectPath.from_uri(text)


def ray_storage(location: Location) -> tuple[str, pyarrow.fs.FileSystem | None]:
    """``(storage_path, storage_filesystem)`` for Ray's ``RunConfig``/``Tuner.restore``: a local
    path as it is, an object path as the path on its filesystem plus that filesystem."""
    if isinstance(location, ObjectPath):
        return location.fs_path, location.fs
    return str(location), None


def location_digest(location: Location) -> str:
    """SHA-256 of a file's bytes, wherever it is."""
    if isinstance(location, Path):
        with open(location, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    return hashlib.sha256(location.read_bytes()).hexdigest()
