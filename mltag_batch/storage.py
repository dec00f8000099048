"""Where inputs and outputs live: local paths, or any filesystem URI that pyarrow reads (s3://,
gs://, hdfs://, abfs://, file://), with fsspec for the schemes pyarrow lacks. One small API, so
listing, reading and writing look the same on a laptop and on a cluster."""

from __future__ import annotations

import functools
import os
import re
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


class FileTooLargeError(Exception):
    """A file over the byte limit; read no further than the limit."""


def is_uri(path: str) -> bool:
    return bool(_URI.match(path))


@dataclass(frozen=True)
class Location:
    """A filesystem and the way its URIs map onto the paths it takes."""

    fs: pafs.FileSystem
    scheme: str  # "" for the local filesystem
    netloc: str
    # "local"; "bucket" (s3, gs: the bucket is the first part of the path); "path" (file,
    # hdfs: the host is not in the path); "fsspec" (fsspec strips the scheme itself)
    mode: str
    spec: Any = None  # the fsspec filesystem, in "fsspec" mode

    def inner(self, uri: str) -> str:
        """The path this filesystem takes for `uri` (of this location)."""
        if self.mode == "local":
            return os.path.abspath(uri)
        if self.mode == "bucket":
            return uri.split("://", 1)[1].rstrip("/")
        if self.mode == "fsspec":
            inner: str = self.spec._strip_protocol(uri)
            return inner
        return urlsplit(uri).path.rstrip("/") or "/"

    def uri(self, inner: str) -> str:
        """The URI of a path this filesystem returned (the inverse of `inner`)."""
        if self.mode == "local":
            return inner
        if self.mode in ("bucket", "fsspec"):
            return f"{self.scheme}://{inner}"
        return f"{self.scheme}://{self.netloc}{inner}"


@functools.lru_cache(maxsize=64)
def _location(scheme: str, netloc: str, sample: str) -> Location:
    """One filesystem per scheme and host/bucket and process: an S3 or GCS client is costly
    to make, and every image read goes through here."""
    try:
        fs, inner = pafs.FileSystem.from_uri(sample)
    except (pa.ArrowInvalid, ValueError, pa.ArrowNotImplementedError):
        import fsspec  # a dependency of ray[data]

        spec = fsspec.filesystem(scheme)
        return Location(pafs.PyFileSystem(pafs.FSSpecHandler(spec)), scheme, netloc, "fsspec", spec)
    rest = sample.split("://", 1)[1].rstrip("/")
    mode = "bucket" if netloc and inner.rstrip("/") == rest else "path"
    return Location(fs, scheme, netloc, mode)


_LOCAL = Location(pafs.LocalFileSystem(), "", "", "local")


def locate(path: str) -> tuple[Location, str]:
    """The location of `path` and the path its filesystem takes."""
    if not is_uri(path):
        return _LOCAL, os.path.abspath(path)
    parts = urlsplit(path)
    if parts.query:  # options in the URI (s3://b/k?region=x): no sharing between URIs
        fs, inner = pafs.FileSystem.from_uri(path)
        return Location(fs, parts.scheme, parts.netloc, "path"), inner
    loc = _location(parts.scheme, parts.netloc, path)
    return loc, loc.inner(path)


def normalize(path: str) -> str:
    """The form `walk` lists paths in: absolute locally, the filesystem's own for URIs."""
    loc, inner = locate(path)
    return loc.uri(inner)


def join(base: str, *names: str) -> str:
    """`base/name`, for local paths and URIs alike."""
    if not is_uri(base):
        return os.path.join(base, *names)
    return "/".join([base.rstrip("/"), *names])


def parent(path: str) -> str:
    if not is_uri(path):
        return os.path.dirname(os.path.abspath(path))
    return path.rstrip("/").rsplit("/", 1)[0]


def read_bytes(path: str, limit: int | None = None) -> bytes:
    """A whole file, or FileTooLargeError past `limit` bytes (never reads more than that)."""
    if is_uri(path):
        loc, inner = locate(path)
        with loc.fs.open_input_stream(inner) as f:
            data: bytes = f.read() if limit is None else f.read(limit + 1)
    else:
        with open(path, "rb") as fh:
            data = fh.read(-1 if limit is None else limit + 1)
    if limit is not None and len(data) > limit:
        raise FileTooLargeError(f"the file is larger than the limit of {limit} bytes")
    return data


def is_dir(path: str) -> bool:
    if not is_uri(path):
        return os.path.isdir(path)
    loc, inner = locate(path)
    return loc.fs.get_file_info(inner).type == pafs.FileType.Directory


def exists(path: str) -> bool:
    if not is_uri(path):
        return os.path.exists(path)
    loc, inner = locate(path)
    return loc.fs.get_file_info(inner).type != pafs.FileType.NotFound


def walk(root: str) -> list[str]:
    """Every file under `root`, recursively, as paths (or URIs) of the same form as `root`."""
    if not is_uri(root):
        found: list[str] = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            found.extend(os.path.join(dirpath, name) for name in filenames)
        return found
    loc, inner = locate(root)
    infos = loc.fs.get_file_info(pafs.FileSelector(inner, recursive=True))
    return [loc.uri(i.path) for i in infos if i.type == pafs.FileType.File]


def list_dir(root: str) -> list[str]:
    """File names directly in `root` (nothing when it does not exist)."""
    if not is_uri(root):
        try:
            return [e.name for e in os.scandir(root) if e.is_file()]
        except FileNotFoundError:
            return []
    loc, inner = locate(root)
    selector = pafs.FileSelector(inner, recursive=False, allow_not_found=True)
    return [i.base_name for i in loc.fs.get_file_info(selector) if i.type == pafs.FileType.File]


def make_dirs(path: str) -> None:
    if not is_uri(path):
        os.makedirs(path, exist_ok=True)
        return
    loc, inner = locate(path)
    loc.fs.create_dir(inner, recursive=True)


def delete(path: str) -> None:
    if not is_uri(path):
        os.unlink(path)
        return
    loc, inner = locate(path)
    loc.fs.delete_file(inner)


def write_atomic(path: str, data: bytes) -> None:
    """Publish `data` at `path` whole or not at all. Locally: a hidden temp file in the same
    directory, then a rename (atomic on POSIX). Object stores publish an object only when its
    upload completes, so there we write directly (a rename there would be a second copy)."""
    if is_uri(path) and not path.startswith("file://"):
        loc, inner = locate(path)
        with loc.fs.open_output_stream(inner) as f:
            f.write(data)
        return
    target = locate(path)[1]
    head, name = os.path.split(target)
    tmp = os.path.join(head, f"{TEMP_PREFIX}{uuid.uuid4().hex[:8]}-{name}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# Hidden from readers: pyarrow datasets, Ray and Spark skip names starting with "." or "_".
TEMP_PREFIX = ".tmp-"
