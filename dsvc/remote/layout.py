"""The layout of a remote, and reading it without trusting it (DESIGN §10).

```
config                         "dsvc-remote <format>": written once, create-only, by the first push
refs/{heads,tags,checkpoints,inferences}/...    one hex id per ref, moved by if-match
packs/pack-<h>.pack, .idx      structured objects (frames, labels, nodes, commits), about 64 MiB each
packs/media-<h>.pack, .idx     media blobs, apart so a clone can skip them
```

Packs and indexes use the local pack format (store/packs.py); `<h>` is the BLAKE3 of the pack's sorted
ids, so an index is checked against its name, its checksum and its pack's size before anything uses it.
Indexes never change, so each is downloaded once and cached under `.dsvc/remotes/<name>/`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsvc.atomic import write_file
from dsvc.errors import BadRevision, CorruptObject, RemoteError, UnsupportedFormat
from dsvc.hashing import HEX_SIZE, ID_SIZE, ObjectId, hasher
from dsvc.refs import check_ref_name
from dsvc.remote.backends import Backend, NotOnRemote, PreconditionFailed, Stat
from dsvc.store.packs import ID_DTYPE, PACK_HEADER, PackIndex

REMOTE_FORMAT = 1
CONFIG_KEY = "config"
PACKS = "packs/"
OBJECT_PACK = "pack"
MEDIA_PACK = "media"
_PACK_KEY = re.compile(rf"^packs/((?:{OBJECT_PACK}|{MEDIA_PACK})-[0-9a-f]{{{HEX_SIZE}}})\.(pack|idx)$")
MAX_REF_BYTES = 256
MAX_CONFIG_BYTES = 4096
# An index holds 76 bytes per entry: 64 MiB packs of 20 KB blobs need ~250 KB. Anything above this is
# refused rather than read into memory.
MAX_INDEX_BYTES = 256 << 20
WORKERS = 8
FETCHED = "fetched"


@dataclass(frozen=True)
class RemoteRef:
    """A ref as the remote holds it: its target and the etag an if-match update must name."""

    name: str
    target: ObjectId
    etag: str


def read_format(backend: Backend) -> int | None:
    """The remote's format version, None for an empty remote; a newer format is refused."""
    try:
        data = backend.get(CONFIG_KEY).data
    except NotOnRemote:
        return None
    text = data[:MAX_CONFIG_BYTES].decode("utf-8", "replace").split()
    if len(data) > MAX_CONFIG_BYTES or len(text) != 2 or text[0] != "dsvc-remote" or not text[1].isdigit():
        raise RemoteError(f"{backend.url} is not a dsvc remote (its config is not one)")
    version = int(text[1])
    if version > REMOTE_FORMAT:
        raise UnsupportedFormat(
            f"{backend.url} has remote format {version}; this dsvc reads {REMOTE_FORMAT}: upgrade dsvc"
        )
    return version


def ensure_format(backend: Backend) -> None:
    """Mark a remote as a dsvc remote of this format (create-only, so two first pushes agree)."""
    if read_format(backend) is None:
        try:
            backend.put(CONFIG_KEY, f"dsvc-remote {REMOTE_FORMAT}\n".encode(), create=True)
        except PreconditionFailed:
            read_format(backend)


def read_refs(backend: Backend) -> dict[str, RemoteRef]:
    """Every ref on the remote with its etag; names and contents are validated."""
    keys = []
    for stat in backend.list("refs/"):
        try:
            keys.append(check_ref_name(stat.key))
        except BadRevision:
            raise RemoteError(f"{backend.url} holds an invalid ref name: {stat.key[:100]!r}") from None
        if stat.size > MAX_REF_BYTES:
            raise RemoteError(f"{backend.url}: ref {stat.key} is too large to be a ref")
    with ThreadPoolExecutor(WORKERS) as pool:
        fetched = list(pool.map(backend.get, keys))
    return {
        key: RemoteRef(key, parse_ref(backend, key, got.data), got.etag)
        for key, got in zip(keys, fetched, strict=True)
    }


def parse_ref(backend: Backend, name: str, data: bytes) -> ObjectId:
    text = data.decode("ascii", "replace").strip()
    if len(data) > MAX_REF_BYTES or len(text) != HEX_SIZE or any(c not in "0123456789abcdef" for c in text):
        raise RemoteError(f"{backend.url}: ref {name} is damaged")
    return ObjectId(bytes.fromhex(text))


def ref_bytes(oid: ObjectId) -> bytes:
    return oid.hex().encode() + b"\n"


def pack_key(name: str, ext: str) -> str:
    return f"{PACKS}{name}.{ext}"


def list_packs(backend: Backend) -> tuple[dict[str, Stat], set[str]]:
    """The remote's packs: those with an index (complete) with the pack's stat, and those whose index is
    not there yet (an interrupted push). Any other key under packs/ is refused."""
    packs: dict[str, Stat] = {}
    indexes: set[str] = set()
    for stat in backend.list(PACKS):
        match = _PACK_KEY.match(stat.key)
        if match is None:
            raise RemoteError(f"{backend.url} holds an unexpected pack name: {stat.key[:100]!r}")
        if match.group(2) == "pack":
            packs[match.group(1)] = stat
        else:
            indexes.add(match.group(1))
    complete = {name: stat for name, stat in packs.items() if name in indexes}
    return complete, set(packs) - indexes


def check_index(data: bytes, name: str, pack_size: int) -> PackIndex:
    """Parse an index a remote sent: its checksum, its name (the hash of its ids), and that every entry
    lies inside its pack."""
    index = PackIndex.parse(data, name)
    ids = index.ids.tobytes()
    h = hasher()
    h.update(ids)
    if name.split("-", 1)[1] != h.hexdigest() or (
        len(index) > 1 and not bool(np.all(index.ids[1:] > index.ids[:-1]))
    ):
        raise CorruptObject(f"pack index {name}.idx does not match its name")
    if len(index) and (
        int(index.offsets.min()) < PACK_HEADER.size or int((index.offsets + index.lengths).max()) > pack_size
    ):
        raise CorruptObject(f"pack index {name}.idx points past the end of its pack")
    return index


@dataclass
class RemoteIndex:
    """Where every object of a remote lives: all pack indexes merged into one sorted array."""

    names: list[str]
    sizes: list[int]
    ids: np.ndarray
    packs: np.ndarray
    offsets: np.ndarray
    lengths: np.ndarray

    @classmethod
    def merge(cls, indexes: Mapping[str, PackIndex], sizes: Mapping[str, int]) -> RemoteIndex:
        names = sorted(indexes)
        if not names:
            empty = np.array([], dtype=ID_DTYPE)
            return cls([], [], empty, np.array([], dtype=np.int32), np.array([], "<u8"), np.array([], "<u4"))
        ids = np.concatenate([indexes[n].ids for n in names])
        packs = np.concatenate([np.full(len(indexes[n]), i, dtype=np.int32) for i, n in enumerate(names)])
        offsets = np.concatenate([indexes[n].offsets for n in names])
        lengths = np.concatenate([indexes[n].lengths for n in names])
        order = np.argsort(ids, kind="stable")
        return cls(names, [sizes[n] for n in names], ids[order], packs[order], offsets[order], lengths[order])

    def find(self, oids: Iterable[bytes]) -> np.ndarray:
        """Position of each id in the merged arrays, or -1."""
        wanted = np.array(list(oids), dtype=ID_DTYPE)
        if not len(self.ids) or not len(wanted):
            return np.full(len(wanted), -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.ids, wanted), len(self.ids) - 1)
        return np.where(self.ids[pos] == wanted, pos, -1)

    def absent(self, oids: list[ObjectId]) -> list[ObjectId]:
        """The ids no pack of the remote holds."""
        return [oid for oid, pos in zip(oids, self.find(oids), strict=True) if pos < 0]

    def id_at(self, position: int) -> ObjectId:
        return ObjectId(bytes(self.ids[position]).ljust(ID_SIZE, b"\0"))  # numpy drops trailing NULs

    def ids_in(self, packs: list[int]) -> list[ObjectId]:
        """Every id held by the given packs (by their number in `names`)."""
        return [self.id_at(int(p)) for p in np.nonzero(np.isin(self.packs, packs))[0]]


def load_indexes(
    backend: Backend, cache: Path, complete: Mapping[str, Stat]
) -> tuple[dict[str, PackIndex], dict[str, bytes]]:
    """Every complete pack's index: from the cache when there, else downloaded and checked. Returns the
    indexes and the new index files (the caller caches them once its work is safely done)."""
    indexes: dict[str, PackIndex] = {}
    todo = []
    for name, stat in complete.items():
        cached = cache / f"{name}.idx"
        if cached.is_file():
            try:
                indexes[name] = check_index(cached.read_bytes(), name, stat.size)
                continue
            except CorruptObject:
                cached.unlink()  # a damaged cache entry is fetched again
        todo.append(name)

    def download(name: str) -> tuple[str, bytes]:
        stat = backend.head(pack_key(name, "idx"))
        if stat is None or stat.size > MAX_INDEX_BYTES:
            raise RemoteError(f"{backend.url}: index of {name} is missing or too large")
        return name, backend.get(pack_key(name, "idx")).data

    fresh: dict[str, bytes] = {}
    with ThreadPoolExecutor(WORKERS) as pool:
        for name, data in pool.map(download, todo):
            try:
                indexes[name] = check_index(data, name, complete[name].size)
            except (CorruptObject, UnsupportedFormat) as exc:
                raise RemoteError(f"{backend.url}: {exc}") from None
            fresh[name] = data
    return indexes, fresh


def fetched_packs(cache: Path) -> set[str]:
    """The packs whose objects this repository has taken in (fetched, or pushed from here). A cached
    index alone says nothing: a push reads every index of the remote without fetching its objects."""
    try:
        return set((cache.parent / FETCHED).read_text(encoding="utf-8").split())
    except FileNotFoundError:
        return set()


def mark_fetched(cache: Path, names: Iterable[str]) -> None:
    new = fetched_packs(cache) | set(names)
    cache.parent.mkdir(parents=True, exist_ok=True)
    write_file(cache.parent / FETCHED, "".join(f"{n}\n" for n in sorted(new)).encode())


def save_indexes(cache: Path, fresh: Mapping[str, bytes]) -> None:
    """Cache downloaded (checked) index files."""
    if fresh:
        cache.mkdir(parents=True, exist_ok=True)
    for name, data in fresh.items():
        write_file(cache / f"{name}.idx", data)
