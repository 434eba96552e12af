"""Remote backends: the tiny storage interface remotes need, for a local folder and for object stores.

Five operations (restic's lesson): `put` (plain, create-only, or if-match an etag), `get` (whole, or byte
ranges), `head`, `list(prefix)`, `delete`. Keys are validated before use, so nothing a remote or a caller
names can reach outside the remote's root. Conditional writes are what lets many clients share a remote:
refs move by if-match, so two pushes racing for one branch cannot both win.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlparse

from dsvc.atomic import Buffer, fsync_dir, new_file, write_parts
from dsvc.errors import InvalidInput, RemoteError

# What a put writes: bytes, or bytes in parts (a pack laid out from views into local packs).
Data = bytes | Sequence[Buffer]

_KEY_PART = re.compile(r"^[A-Za-z0-9._@+=-]+$")
MAX_KEY = 1024


class NotOnRemote(RemoteError):
    """Raised when a key does not exist on the remote."""


class PreconditionFailed(RemoteError):
    """Raised when a create-only key exists already, or an if-match key changed meanwhile."""


@dataclass(frozen=True)
class Stat:
    """What `head` and `list` tell about a key: its size and an etag naming this version of it."""

    key: str
    size: int
    etag: str


@dataclass(frozen=True)
class Fetched:
    """A key's bytes with the etag of the version read (what an if-match update must name)."""

    data: bytes
    etag: str


def check_key(key: str) -> str:
    """Refuse keys that are absolute, climb with `..`, have empty or hidden parts or unusual characters."""
    parts = key.split("/")
    if not key or len(key) > MAX_KEY or any(not _KEY_PART.match(p) or p.startswith(".") for p in parts):
        raise RemoteError(f"invalid remote key: {key[:100]!r}")
    return key


class Backend(ABC):
    """Storage of immutable and conditionally-updated keys under one root."""

    url: str

    @abstractmethod
    def put(self, key: str, data: Data, *, create: bool = False, if_match: str | None = None) -> str:
        """Write a key (its bytes, or its bytes in parts) and return its new etag. With create, fail if it
        exists; with if_match, fail unless its current etag is that one (PreconditionFailed either way)."""

    @abstractmethod
    def get(self, key: str) -> Fetched:
        """Read a whole key (NotOnRemote when absent)."""

    @abstractmethod
    def get_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> list[Buffer]:
        """Read byte ranges [start, end) of a key, in one request where the store allows (as the
        client received them: views where it lends its buffers)."""

    @abstractmethod
    def head(self, key: str) -> Stat | None:
        """Return a key's size and etag, or None when absent."""

    @abstractmethod
    def list(self, prefix: str) -> Iterator[Stat]:
        """Yield every key under a prefix (a folder path ending in `/`)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove a key; removing an absent key is not an error."""


class FolderBackend(Backend):
    """A remote in a local (or mounted) folder: each write goes to a temporary file, is fsynced and
    renamed into place; create-only links the temporary file (which fails if the key exists);
    if-match compares and renames under an flock, so concurrent updaters serialise."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = str(root)
        self._tmp = root / ".tmp"

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    @staticmethod
    def _etag(st: os.stat_result) -> str:
        # Every write renames a new file into place, so inode + mtime + size name one version of a key.
        return f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"

    def _write_temp(self, data: Data) -> Path:
        self._tmp.mkdir(parents=True, exist_ok=True)
        tmp = self._tmp / f"put-{secrets.token_hex(8)}"
        with new_file(tmp) as fd:
            write_parts(fd, [data] if isinstance(data, bytes) else data)
            os.fsync(fd)
        return tmp

    def put(self, key: str, data: Data, *, create: bool = False, if_match: str | None = None) -> str:
        dest = self._path(key)
        tmp = self._write_temp(data)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            if create:
                try:
                    os.link(tmp, dest)
                except FileExistsError:
                    raise PreconditionFailed(f"{key} exists already on {self.url}") from None
            elif if_match is not None:
                with self._locked():
                    current = self.head(key)
                    if current is None or current.etag != if_match:
                        raise PreconditionFailed(f"{key} changed on {self.url} since it was read")
                    os.replace(tmp, dest)
            else:
                os.replace(tmp, dest)
            fsync_dir(dest.parent)
            return self._etag(dest.stat())
        finally:
            tmp.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self._tmp.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._tmp / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def get(self, key: str) -> Fetched:
        try:
            with open(self._path(key), "rb") as handle:
                return Fetched(handle.read(), self._etag(os.fstat(handle.fileno())))
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotOnRemote(f"{key} is not on {self.url}") from None

    def get_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> list[Buffer]:
        try:
            fd = os.open(self._path(key), os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            raise NotOnRemote(f"{key} is not on {self.url}") from None
        try:
            out: list[Buffer] = [os.pread(fd, end - start, start) for start, end in ranges]
        finally:
            os.close(fd)
        if any(len(chunk) != end - start for chunk, (start, end) in zip(out, ranges, strict=True)):
            raise RemoteError(f"{key} on {self.url} is shorter than a range read from it")
        return out

    def head(self, key: str) -> Stat | None:
        try:
            st = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return Stat(key, st.st_size, self._etag(st))

    def list(self, prefix: str) -> Iterator[Stat]:
        folder = self.root.joinpath(*[p for p in prefix.split("/") if p])
        if not folder.is_dir():
            return
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                st = path.stat()
                yield Stat(path.relative_to(self.root).as_posix(), st.st_size, self._etag(st))

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class ObjectStoreBackend(Backend):
    """S3 (and S3-compatible stores), GCS and Azure through obstore, whose conditional writes map onto
    create-only (If-None-Match: *) and if-match (If-Match: etag) PUTs."""

    def __init__(self, store: Any, url: str) -> None:
        self.store = store
        self.url = url

    def put(self, key: str, data: Data, *, create: bool = False, if_match: str | None = None) -> str:
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        mode: Any = "create" if create else {"e_tag": if_match} if if_match is not None else "overwrite"
        try:
            # Parts go as they are (a multipart upload reads them in turn); a conditional PUT is one
            # request and needs the bytes whole.
            body = data if isinstance(data, bytes) or mode == "overwrite" else b"".join(data)
            result = obstore.put(self.store, check_key(key), body, mode=mode)
        except (AlreadyExistsError, PreconditionError):
            raise PreconditionFailed(f"{key} exists or changed on {self.url}") from None
        except Exception as exc:
            raise _remote_error(self.url, key, exc) from None
        return result["e_tag"] or ""

    def get(self, key: str) -> Fetched:
        import obstore

        try:
            result = obstore.get(self.store, check_key(key))
            return Fetched(bytes(result.bytes()), result.meta["e_tag"] or "")
        except FileNotFoundError:
            raise NotOnRemote(f"{key} is not on {self.url}") from None
        except Exception as exc:
            raise _remote_error(self.url, key, exc) from None

    def get_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> list[Buffer]:
        import obstore

        if not ranges:
            return []
        try:
            chunks = obstore.get_ranges(
                self.store, check_key(key), starts=[r[0] for r in ranges], ends=[r[1] for r in ranges]
            )
        except FileNotFoundError:
            raise NotOnRemote(f"{key} is not on {self.url}") from None
        except Exception as exc:
            raise _remote_error(self.url, key, exc) from None
        out: list[Buffer] = [memoryview(chunk) for chunk in chunks]  # obstore's buffers, not copies
        if any(len(chunk) != end - start for chunk, (start, end) in zip(out, ranges, strict=True)):
            raise RemoteError(f"{key} on {self.url} is shorter than a range read from it")
        return out

    def head(self, key: str) -> Stat | None:
        import obstore

        try:
            meta = obstore.head(self.store, check_key(key))
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise _remote_error(self.url, key, exc) from None
        return Stat(key, meta["size"], meta["e_tag"] or "")

    def list(self, prefix: str) -> Iterator[Stat]:
        import obstore

        try:
            for chunk in obstore.list(self.store, prefix=prefix.rstrip("/") or None):
                for meta in chunk:
                    yield Stat(meta["path"], meta["size"], meta["e_tag"] or "")
        except Exception as exc:
            raise _remote_error(self.url, prefix, exc) from None

    def delete(self, key: str) -> None:
        import obstore

        try:
            obstore.delete(self.store, check_key(key))
        except FileNotFoundError:
            return
        except Exception as exc:
            raise _remote_error(self.url, key, exc) from None


class CountingBackend(Backend):
    """Another backend, counting the requests made through it (what a push or fetch reports)."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.url = inner.url
        self.requests = 0

    def put(self, key: str, data: Data, *, create: bool = False, if_match: str | None = None) -> str:
        self.requests += 1
        return self.inner.put(key, data, create=create, if_match=if_match)

    def get(self, key: str) -> Fetched:
        self.requests += 1
        return self.inner.get(key)

    def get_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> list[Buffer]:
        self.requests += 1
        return self.inner.get_ranges(key, ranges)

    def head(self, key: str) -> Stat | None:
        self.requests += 1
        return self.inner.head(key)

    def list(self, prefix: str) -> Iterator[Stat]:
        self.requests += 1  # one listing; an object store pages it in 1000s
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self.requests += 1
        self.inner.delete(key)


def _remote_error(url: str, key: str, exc: Exception) -> RemoteError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return RemoteError(f"{url}: {key}: {first[:300]}")


# Environment variables (lowercased by the CLI) that configure each kind of store: credentials,
# region and endpoint. Only these are passed to obstore; dsvc never stores them.
STORE_SETTINGS = {
    "s3": (
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "aws_region",
        "aws_default_region",
        "aws_endpoint_url",
        "aws_endpoint",
    ),
    "gs": ("google_service_account", "google_service_account_key", "google_application_credentials"),
    "az": (
        "azure_storage_account_name",
        "azure_storage_account_key",
        "azure_storage_sas_key",
        "azure_storage_token",
        "azure_client_id",
        "azure_client_secret",
        "azure_tenant_id",
    ),
}
SCHEMES = {"s3": "s3", "s3a": "s3", "gs": "gs", "az": "az", "azure": "az", "abfs": "az", "abfss": "az"}


def open_backend(
    url: str, endpoint: str | None = None, region: str | None = None, env: Mapping[str, str] = {}
) -> Backend:
    """Open the backend a remote URL names: a path or `file://` for a folder, `s3://`, `gs://`, `az://`
    for object stores. `env` holds the caller's store settings (standard variable names, lowercased)."""
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        path = Path(parsed.path if parsed.scheme else url)
        if not path.is_absolute():
            raise InvalidInput(f"a folder remote needs an absolute path: {url}")
        return FolderBackend(path)
    kind = SCHEMES.get(parsed.scheme)
    if kind is None:
        raise InvalidInput(f"unsupported remote URL {url!r} (use a path, file://, s3://, gs:// or az://)")
    from obstore.store import from_url

    config: dict[str, Any] = {k: v for k, v in env.items() if k in STORE_SETTINGS[kind] and v}
    if kind == "s3":
        from_env = config.pop("aws_endpoint_url", None) or config.pop("aws_endpoint", None)
        config.pop("aws_endpoint", None)
        endpoint = endpoint or from_env  # an endpoint the remote names wins over the environment's
        if endpoint:
            config["aws_endpoint"] = endpoint
        if region:
            config["aws_region"] = region
        if endpoint or "aws_region" in config:
            config.setdefault("aws_region", config.pop("aws_default_region", "us-east-1"))
    client: Any = {"allow_http": True} if endpoint and endpoint.startswith("http://") else None
    try:
        store = from_url(url, config=cast(Any, config) or None, client_options=client)
    except Exception as exc:
        raise RemoteError(f"cannot open remote {url}: {str(exc).splitlines()[0][:300]}") from None
    return ObjectStoreBackend(store, url)
