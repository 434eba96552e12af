"""The Python API: `Repo` opens a repository folder and offers what the commands do.

A repository is a working tree with a `.dsvc/` folder (DESIGN §5). Nothing here reads the environment, the
terminal or the current directory: callers pass paths and identities explicitly.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsvc import dataset, history, tree, tree_diff
from dsvc.atomic import prune_empty_dirs
from dsvc.config import Config
from dsvc.diff import FrameChange, FrameDetail, details, frame_change
from dsvc.errors import BadRevision, DsvcError, InvalidInput, LockHeld, NotARepository, RefConflict
from dsvc.formats import detect_format, get_format
from dsvc.fsck import FsckReport, fsck
from dsvc.gcpause import bulk
from dsvc.hashing import ObjectId, hash_file
from dsvc.history import load_any, resolve, resolve_commit
from dsvc.lock import WriterLock
from dsvc.objects import Checkpoint, Commit, Frame, Labels, Signature, Source, StoredObject
from dsvc.refs import HEAD, RefStore, check_ref_name
from dsvc.remote import settings
from dsvc.repo_remote import DEFAULT_BRANCH, RemoteMixin
from dsvc.store import DiskObjectStore
from dsvc.workdir import renders
from dsvc.workdir.checkout import CheckoutResult, checkout
from dsvc.workdir.index import Index
from dsvc.workdir.scan import DSVC_DIR
from dsvc.workdir.stage import (
    Progress,
    SourceSpec,
    StageResult,
    empty_roots,
    no_progress,
    stage,
    tracked_under,
)
from dsvc.workdir.status import Changes, Worktree, compare_roots, worktree_changes

if TYPE_CHECKING:  # imported when used: a status or checkout needs neither diffs nor metrics
    from dsvc.repo_diff import Diffs
    from dsvc.repo_metrics import Metrics

REF_FOLDERS = ("refs/heads", "refs/tags", "refs/checkpoints", "refs/inferences", "logs")


@dataclass
class Status:
    """Where HEAD is and what differs: staged (index vs HEAD) and unstaged (working tree vs index)."""

    branch: str | None
    head: ObjectId | None
    staged: Changes
    unstaged: Changes

    @property
    def clean(self) -> bool:
        return self.staged.empty and self.unstaged.empty


@dataclass(frozen=True)
class LogEntry:
    """One commit of the log, with the checkpoints that point at it."""

    id: ObjectId
    commit: Commit
    checkpoints: tuple[str, ...] = field(default=())
    frame: FrameDetail | None = None  # with `log(frame=...)`: how this commit changed that frame


@dataclass(frozen=True)
class CatResult:
    """What `cat-object` finds under an id: a decoded object, or a blob's bytes."""

    oid: ObjectId
    obj: StoredObject | None
    blob: bytes | None


class Repo(RemoteMixin):
    """An open repository: its working tree, object store, refs and config."""

    def __init__(self, root: Path, env: Mapping[str, str] = {}) -> None:
        """`env`: settings of remote stores (credentials, endpoint), as the CLI read them."""
        self.root = root
        self.env = dict(env)
        self.dsvc_dir = root / DSVC_DIR
        if not (self.dsvc_dir / "config").is_file():
            raise NotARepository(f"not a dsvc repository: {root} (run 'dsvc init')")
        self.config = Config.load(self.dsvc_dir / "config")
        self.store = DiskObjectStore(self.dsvc_dir / "objects", self.config.get_int("core", "compression", 3))
        self.refs = RefStore(self.dsvc_dir)
        self._index: Index | None = None

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
    def discover(cls, start: Path, env: Mapping[str, str] = {}) -> Repo:
        """Open the repository that contains start (it or its nearest ancestor with a `.dsvc`)."""
        start = start.resolve()
        for folder in (start, *start.parents):
            if (folder / DSVC_DIR / "config").is_file():
                return cls(folder, env)
        raise NotARepository(f"not a dsvc repository (or any parent up to /): {start}")

    def lock(self) -> WriterLock:
        """The writer lock: hold it around anything that writes objects or moves refs."""
        return WriterLock(self.dsvc_dir / "lock", on_acquire=self._remove_leftovers)

    def _remove_leftovers(self) -> None:
        """Delete what a killed writer left (temporary files, ref locks): with the writer lock held, no
        other writer can be using them."""
        self.store.remove_temporaries()
        self.refs.remove_stale_locks()
        for path in self.dsvc_dir.glob(".*.tmp-*"):  # a config being rewritten
            path.unlink(missing_ok=True)

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
        return fsck(self.store, self.refs, media=settings.lazy_media_remote(self.config) is None)

    # -- sources -------------------------------------------------------------------------------------

    def sources(self) -> list[SourceSpec]:
        """The annotation sources registered in the config."""
        out = []
        for section in self.config.sections("source "):
            items = self.config.items(section)
            out.append(
                SourceSpec(section[len("source ") :].strip('"'), items["format"], items.get("media", ""))
            )
        return out

    def source_add(self, path: str, fmt: str | None = None, media: str = "") -> SourceSpec:
        """Register an annotation file (relative to the root); the format is detected when not given."""
        rel = self.relative(path)
        if not (self.root / rel).is_file():
            raise InvalidInput("no such annotation file", path=rel)
        name = fmt or detect_format(self.root / rel)
        get_format(name)
        media_rel = self.relative(media) if media else ""
        if media_rel and not (self.root / media_rel).is_dir():
            raise InvalidInput("no such media folder", path=media_rel)
        spec = SourceSpec(rel, name, media_rel)
        with self.lock():
            self.config.set(f'source "{rel}"', "format", name)
            self.config.set(f'source "{rel}"', "media", media_rel)
            self.config.save()
        return spec

    def source_remove(self, path: str) -> None:
        rel = self.relative(path)
        with self.lock():
            if not self.config.remove_section(f'source "{rel}"'):
                raise InvalidInput("not a registered source", path=rel)
            self.config.save()

    def relative(self, path: str) -> str:
        """A path given by the user, relative to the root and in posix form; refuses paths outside."""
        full = (self.root / path).resolve() if not Path(path).is_absolute() else Path(path).resolve()
        if not full.is_relative_to(self.root.resolve()):
            raise InvalidInput("is outside the repository", path=path)
        rel = full.relative_to(self.root.resolve()).as_posix()
        return "" if rel == "." else rel

    # -- staging and committing ------------------------------------------------------------------------

    @property
    def index(self) -> Index:
        if self._index is None:
            self._index = Index(self.dsvc_dir / "index.sqlite")
        return self._index

    def head_commit(self) -> ObjectId | None:
        return self.refs.read(HEAD)

    def roots_of(self, commit: ObjectId | None) -> dict[str, ObjectId]:
        """A commit's column roots, with empty maps for columns it lacks (or for no commit)."""
        roots = empty_roots()
        if commit is not None:
            roots.update(history.read_commit(self.store, commit).roots)
        return roots

    def staged_roots(self) -> dict[str, ObjectId]:
        staged = self.index.staged_roots()
        return {**self.roots_of(None), **staged} if staged is not None else self.roots_of(self.head_commit())

    @bulk
    def add(
        self, paths: Iterable[str] = (), require_media: bool = False, progress: Progress = no_progress
    ) -> StageResult:
        """Stage the working tree (or some paths of it): blobs and objects first, the index last."""
        under = [self.relative(p) for p in paths] or None
        if under is not None and "" in under:
            under = None
        began = time.time_ns()
        with self.lock():
            base = self.staged_roots()
            described = self.index.described() == base["files"]
            with self.store.batch():
                result = stage(
                    self.store,
                    self.index,
                    self.root,
                    self.sources(),
                    base,
                    under,
                    require_media,
                    progress,
                )
            # Staging wrote an entry (without a mode) for every file it read and forgot every file it
            # removed; the entries of paths whose value changed otherwise (a mode) lose their mode too,
            # and then entries that described the base describe the result.
            diff = tree_diff.diff(self.store, base["files"], result.roots["files"]) if described else ()
            self.index.update(
                stats=result.stats,
                forget=result.forget,
                staged=result.roots,
                stamps=result.stamps,
                untrust=[c.key.decode() for c in diff],
                describes=result.roots["files"] if described else None,
            )
            self._keep_parsed(result, began)
        return result

    def _keep_parsed(self, result: StageResult, began_ns: int) -> None:
        """Put the source files add just parsed in the render cache, so checking out this version
        copies them back instead of rendering them."""
        for spec in self.sources():
            stamp = result.stamps.get(spec.path)
            name = renders.key(self.store, result.roots, spec.path)
            if spec.path in result.sources_parsed and stamp is not None and name is not None:
                renders.keep_parsed(self.dsvc_dir / renders.FOLDER, self.root, spec, name, stamp, began_ns)

    def rm(self, paths: Iterable[str], recursive: bool = False) -> list[str]:
        """Delete tracked files (folders with recursive) from the working tree and stage their removal.

        Every path is checked before anything is deleted, so a bad one leaves the tree as it was."""
        staged = self.staged_roots()
        doomed: list[str] = []
        rels = [self.relative(p) for p in paths]
        for rel in rels:
            tracked = tracked_under(self.store, staged["files"], rel)
            if (self.root / rel).is_dir() and not recursive:
                raise InvalidInput("is a folder (use -r to remove it and everything under it)", path=rel)
            if not tracked:
                raise InvalidInput("is not a tracked file", path=rel or ".")
            doomed += tracked
        for rel in doomed:
            full = self.root / rel
            full.unlink(missing_ok=True)
            prune_empty_dirs(full.parent, self.root)
        self.add(rels)
        return sorted(set(doomed))

    @bulk
    def status(self) -> Status:
        staged = self.staged_roots()
        head = self.head_commit()
        worktree = worktree_changes(self.store, self.index, self.root, self.sources(), staged)
        if worktree.rows:
            self._record_stats(staged["files"], worktree)
        return Status(
            self.refs.symbolic_target(HEAD),
            head,
            compare_roots(self.store, self.roots_of(head), staged),
            worktree.changes,
        )

    def _record_stats(self, files_root: ObjectId, worktree: Worktree) -> None:
        """Record the stat entries a status learned, so the next one is quick; skipped when a writer holds
        the lock (a status never waits) or staged something else meanwhile."""
        try:
            with WriterLock(self.dsvc_dir / "lock", wait_s=0):
                if self.staged_roots()["files"] != files_root:
                    return
                if worktree.complete or self.index.described() == files_root:
                    self.index.update(stats=worktree.rows, replace=worktree.complete, describes=files_root)
        except (LockHeld, PermissionError, sqlite3.OperationalError):  # a read-only repository
            return

    def commit(self, message: str, author: Signature, allow_empty: bool = False) -> ObjectId:
        """Record the staged state as a commit on the current branch (refs move last, by compare-and-swap)."""
        with self.lock():
            head = self.head_commit()
            staged = self.staged_roots()
            if not allow_empty and head is not None and self.roots_of(head) == staged:
                raise DsvcError("nothing to commit (use 'dsvc add' to stage changes)")
            self.store.put_object(tree.EMPTY)
            oid = history.make_commit(self.store, staged, (head,) if head else (), author, message)
            first_line = message.splitlines()[0] if message else ""
            self.refs.set_if_equals(HEAD, head, oid, f"commit: {first_line}")
            self.index.update(staged=staged)
        return oid

    # -- history ---------------------------------------------------------------------------------------

    def checkpoint_names(self) -> dict[bytes, list[str]]:
        """Commit id -> names of the checkpoints that point at it."""
        out: dict[bytes, list[str]] = {}
        for ref, oid in self.refs.list_refs("refs/checkpoints/").items():
            cp = self.store.get_object(oid, Checkpoint)
            out.setdefault(cp.commit, []).append(ref[len("refs/checkpoints/") :])
        return out

    def log(self, rev: str = HEAD, frame: str | None = None, limit: int | None = None) -> Iterator[LogEntry]:
        """Commits reachable from rev, newest first; with frame, only those that changed that frame."""
        if self.head_commit() is None and rev == HEAD:
            return
        names = self.checkpoint_names()
        shown = 0
        for oid, commit in history.walk(self.store, [self.rev_parse(rev, commit=True)]):
            change = None
            if frame is not None:
                parent = self.roots_of(commit.parents[0] if commit.parents else None)
                change = frame_change(self.store, parent, self.roots_of(None) | dict(commit.roots), frame)
                if change is None:
                    continue
            found = None if change is None else details(self.store, [change])[0]
            yield LogEntry(oid, commit, tuple(sorted(names.get(oid, []))), found)
            shown += 1
            if limit is not None and shown >= limit:
                return

    def checkout(
        self,
        rev: str,
        force: bool = False,
        new_branch: str | None = None,
        progress: Progress = no_progress,
    ) -> CheckoutResult:
        """Make the working tree match rev and move HEAD: to the branch rev names, else detached.

        Everything that can refuse (the revision, the new branch's name, local changes) is checked before
        the first file is written."""
        with self.lock():
            target_commit = self.rev_parse(rev, commit=True)
            branch = self._checkout_branch(rev, new_branch)
            result = self._write_worktree(target_commit, force, progress)
            self._move_head(rev, target_commit, branch, new_branch is not None)
        return result

    def _checkout_branch(self, rev: str, new_branch: str | None) -> str | None:
        """The branch HEAD will name after checking out rev (None: detached); a new one must not exist."""
        if new_branch is not None:
            ref = check_ref_name(f"refs/heads/{new_branch}")
            if self.refs.read(ref) is not None:
                raise DsvcError(f"branch {new_branch!r} already exists")
            return ref
        try:
            ref = check_ref_name(f"refs/heads/{rev}")
        except BadRevision:
            return None  # a revision expression (HEAD~1, an id): detached
        return ref if self.refs.read(ref) is not None else None

    @bulk
    def _write_worktree(
        self, target_commit: ObjectId, force: bool, progress: Progress = no_progress
    ) -> CheckoutResult:
        """Bring the working tree, the index and the sources to a commit (the caller holds the lock);
        checkout, pull and clone all write through here, with the collector paused."""
        current = self.staged_roots()
        target = self.roots_of(target_commit)
        described = self.index.described() == current["files"]
        # Unforced, only local changes to the files the checkout touches matter; forced, every local
        # change is undone, so every file is looked at.
        diff = tree_diff.diff(self.store, current["files"], target["files"])
        touched = None if force else [c.key.decode() for c in diff]
        worktree = worktree_changes(self.store, self.index, self.root, self.sources(), current, touched)
        dirty = worktree.changes
        staged_changes = compare_roots(self.store, self.roots_of(self.head_commit()), current)
        # Nothing staged (a clone without checkout) holds no work to lose: the checkout writes every file.
        if not force and not staged_changes.empty and current != target and current != empty_roots():
            raise DsvcError("staged changes would be lost: commit them, or use --force")
        lazy = settings.lazy_media_remote(self.config)
        fetch = (lambda blobs: self.fetch_media_blobs(lazy, blobs)) if lazy else None
        cache = self.dsvc_dir / renders.FOLDER
        result = checkout(self.store, self.root, current, target, dirty, force, fetch, progress, cache)
        # Entries that described current's files (or replace those that did not) describe target's
        # after the checkout's writes and removals, which are exactly the edits from one to the other.
        self.index.update(
            stats=[*worktree.rows, *result.written],
            forget=result.removed,
            staged=target,
            stamps=result.stamps,
            describes=target["files"] if described or worktree.complete else None,
            replace=worktree.complete,
        )
        self._sync_sources(target)
        return result

    def _sync_sources(self, roots: Mapping[str, ObjectId]) -> None:
        """Make the config's sources those of the checked-out version."""
        wanted = {
            s.path: s
            for s in (
                self.store.get_object(ObjectId(v), Source)
                for _, v in tree.items(self.store, roots["sources"])
            )
        }
        for spec in self.sources():
            if spec.path not in wanted:
                self.config.remove_section(f'source "{spec.path}"')
        for path, source in wanted.items():
            self.config.set(f'source "{path}"', "format", source.format)
            self.config.set(f'source "{path}"', "media", source.media)
        self.config.save()

    def _move_head(self, rev: str, commit: ObjectId, branch: str | None, created: bool) -> None:
        if created and branch is not None:
            self.refs.add_if_new(branch, commit, f"branch: created from {rev}")
        if branch is not None:
            name = branch.removeprefix("refs/heads/")
            self.refs.set_symbolic(HEAD, branch, f"checkout: moving to {name}")
            return
        self.refs.set_if_equals(HEAD, self.head_commit(), commit, f"checkout: moving to {rev}", follow=False)

    # -- diffs and metrics (their own modules) ---------------------------------------------------------

    @property
    def diffs(self) -> Diffs:
        """Comparisons of two versions: `repo.diffs.between("v0", "v1")`."""
        from dsvc.repo_diff import Diffs  # see TYPE_CHECKING above

        return Diffs(self)

    @property
    def metrics(self) -> Metrics:
        """Inference sets, evaluations and model comparisons: `repo.metrics.evaluate("model_a", "v1")`."""
        from dsvc.repo_metrics import Metrics  # see TYPE_CHECKING above

        return Metrics(self)

    def diff(self, a: str | None = None, b: str | None = None) -> Iterator[FrameChange]:
        """The frames that differ from a (default HEAD) to b (default the working tree), in id order."""
        return self.diffs.diff(a, b)

    def overlap(self, a: str | None = None, b: str | None = None) -> Iterator[str]:
        """The ids of the frames both a and b have."""
        return self.diffs.overlap(a, b)

    # -- branches, tags, checkpoints -----------------------------------------------------------------

    def create_ref(self, kind: str, name: str, rev: str = HEAD) -> ObjectId:
        """Create a branch or tag pointing at rev's commit."""
        ref = check_ref_name(f"refs/{kind}/{name}")
        commit = self.rev_parse(rev, commit=True)
        try:
            with self.lock():
                self.refs.add_if_new(ref, commit, f"{kind}: created from {rev}")
        except RefConflict:
            raise DsvcError(f"{kind[:-1] if kind.endswith('s') else kind} {name!r} already exists") from None
        return commit

    def delete_ref(self, kind: str, name: str) -> None:
        ref = check_ref_name(f"refs/{kind}/{name}")
        current = self.refs.read(ref)
        if current is None:
            raise BadRevision(f"no such {kind[:-1]}: {name}")
        if kind == "heads" and self.refs.symbolic_target(HEAD) == ref:
            raise DsvcError(f"cannot delete the branch you are on: {name}")
        with self.lock():
            self.refs.remove_if_equals(ref, current, f"{kind}: deleted")

    def checkpoint(self, name: str) -> tuple[ObjectId, Checkpoint]:
        oid = self.refs.read(check_ref_name(f"refs/checkpoints/{name}"))
        if oid is None:
            raise BadRevision(f"no such checkpoint: {name}")
        return oid, self.store.get_object(oid, Checkpoint)

    def checkpoint_create(
        self,
        name: str,
        who: Signature,
        rev: str = HEAD,
        description: str = "",
        metadata: Mapping[str, Any] = {},
    ) -> ObjectId:
        """Freeze rev under a name, with a description and metadata."""
        ref = check_ref_name(f"refs/checkpoints/{name}")
        with self.lock():
            commit = self.rev_parse(rev, commit=True)
            oid = history.new_checkpoint(self.store, name, commit, description, metadata, who)
            try:
                self.refs.add_if_new(ref, oid, f"checkpoint: created at {commit.hex()[:12]}")
            except RefConflict:
                raise DsvcError(
                    f"checkpoint {name!r} already exists (edit it with 'dsvc checkpoint edit')"
                ) from None
        if self.config.get_bool("eval", "auto", True):
            self.metrics.evaluate_all(commit.hex())
        return oid

    def checkpoint_edit(self, name: str, who: Signature, **changes: Any) -> ObjectId:
        """Write a new version of a checkpoint (description, metadata, archived); the old stays reachable."""
        with self.lock():
            old, _ = self.checkpoint(name)
            oid = history.revise_checkpoint(self.store, old, who, **changes)
            self.refs.set_if_equals(f"refs/checkpoints/{name}", old, oid, "checkpoint: edited")
        return oid

    def checkpoints(self, include_archived: bool = False) -> list[tuple[ObjectId, Checkpoint]]:
        out = []
        for oid in self.refs.list_refs("refs/checkpoints/").values():
            cp = self.store.get_object(oid, Checkpoint)
            if include_archived or not cp.archived:
                out.append((oid, cp))
        return sorted(out, key=lambda item: (item[1].created.time, item[1].name))

    # -- reading versions ------------------------------------------------------------------------------

    def frames(
        self, rev: str = HEAD, where: Mapping[str, str] = {}, classes: Iterable[str] = ()
    ) -> Iterator[tuple[str, Frame, Labels]]:
        """The frames of a revision with their labels, filtered by metadata values and classes."""
        wanted = set(classes)
        for frame_id, frame, labels in dataset.iter_frames(
            self.store, self.roots_of(self.rev_parse(rev, commit=True))
        ):
            if dataset.matches(frame, labels, where, wanted):
                yield frame_id, frame, labels

    @bulk
    def stats(self, rev: str = HEAD) -> dict[str, Any]:
        return dataset.statistics(self.store, self.roots_of(self.rev_parse(rev, commit=True)))

    @bulk
    def export(self, rev: str, fmt: str, out: Path) -> list[str]:
        return dataset.export(self.store, self.roots_of(self.rev_parse(rev, commit=True)), fmt, out)
