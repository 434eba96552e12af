"""The Python API: `Repo` opens a repository folder and offers what the commands do.

A repository is a working tree with a `.dsvc/` folder (DESIGN §5). Nothing here reads the environment, the
terminal or the current directory: callers pass paths and identities explicitly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from dsvc.config import Config
from dsvc.errors import NotARepository
from dsvc.fsck import FsckReport, fsck
from dsvc.hashing import ObjectId, hash_file
from dsvc.history import load_any, resolve, resolve_commit
from dsvc.lock import WriterLock
from dsvc.objects import StoredObject
from dsvc.refs import HEAD, RefStore
from dsvc.store import DiskObjectStore

DSVC_DIR = ".dsvc"
DEFAULT_BRANCH = "main"
REF_FOLDERS = ("refs/heads", "refs/tags", "refs/checkpoints", "refs/inferences", "logs")


@dataclass(frozen=True)
class CatResult:
    """What `cat-object` finds under an id: a decoded object, or a blob's bytes."""

    oid: ObjectId
    obj: StoredObject | None
    blob: bytes | None


class Repo:
    """An open repository: its working tree, object store, refs and config."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dsvc_dir = root / DSVC_DIR
        if not (self.dsvc_dir / "config").is_file():
            raise NotARepository(f"not a dsvc repository: {root} (run 'dsvc init')")
        self.config = Config.load(self.dsvc_dir / "config")
        self.store = DiskObjectStore(self.dsvc_dir / "objects", self.config.get_int("core", "compression", 3))
        self.refs = RefStore(self.dsvc_dir)

    @classmethod
    def init(cls, path: Path, branch: str = DEFAULT_BRANCH) -> tuple[Repo, bool]:
        """Create a repository at path (made if missing); return it and whether it was new."""
        dsvc_dir = path / DSVC_DIR
        if (dsvc_dir / "config").is_file():
            return cls(path), False
        dsvc_dir.mkdir(parents=True, exist_ok=True)
        DiskObjectStore.create(dsvc_dir / "objects")
        for folder in REF_FOLDERS:
            (dsvc_dir / folder).mkdir(parents=True, exist_ok=True)
        refs = RefStore(dsvc_dir)
        refs.set_symbolic(HEAD, f"refs/heads/{branch}", "init")
        Config.create(dsvc_dir / "config")
        return cls(path), True

    @classmethod
    def discover(cls, start: Path) -> Repo:
        """Open the repository that contains start (it or its nearest ancestor with a `.dsvc`)."""
        start = start.resolve()
        for folder in (start, *start.parents):
            if (folder / DSVC_DIR / "config").is_file():
                return cls(folder)
        raise NotARepository(f"not a dsvc repository (or any parent up to /): {start}")

    def lock(self) -> WriterLock:
        """The writer lock: hold it around anything that writes objects or moves refs."""
        return WriterLock(self.dsvc_dir / "lock")

    def hash_objects(self, paths: Iterable[Path], write: bool = False) -> list[ObjectId]:
        """Return each file's blob id (its BLAKE3); with write, store the files as blobs."""
        if not write:
            return [hash_file(p) for p in paths]
        with self.lock(), self.store.batch():
            return [self.store.put_blob_file(p)[0] for p in paths]

    def cat_object(self, rev: str) -> CatResult:
        """Return the object or blob a revision or id names."""
        oid = resolve(self.store, self.refs, rev)
        if self.store.has_blob(oid):
            return CatResult(oid, None, self.store.read_blob(oid))
        return CatResult(oid, load_any(self.store, oid), None)

    def rev_parse(self, rev: str, commit: bool = False) -> ObjectId:
        """Return the id a revision names; with commit, peel it to a commit."""
        return resolve_commit(self.store, self.refs, rev) if commit else resolve(self.store, self.refs, rev)

    def fsck(self) -> FsckReport:
        return fsck(self.store, self.refs)
