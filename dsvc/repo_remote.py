"""The remote part of the Python API: push, fetch, pull, clone and lazy media (DESIGN §10).

A mixin of `dsvc.Repo`, in its own module so each stays one concept; `dsvc.remote.sync` does the work.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from dsvc.config import Config
from dsvc.errors import DsvcError, InvalidInput, RemoteError
from dsvc.gcpause import bulk
from dsvc.hashing import ObjectId
from dsvc.refs import HEAD, RefStore
from dsvc.remote import settings, sync
from dsvc.remote.sync import FetchResult, PushResult
from dsvc.remote.transfer import Meter, no_meter
from dsvc.remote.walk import descends
from dsvc.store import DiskObjectStore
from dsvc.workdir.scan import DSVC_DIR
from dsvc.workdir.stage import Progress, empty_roots, no_progress

if TYPE_CHECKING:
    from dsvc.lock import WriterLock
    from dsvc.repo import Repo
    from dsvc.workdir.checkout import CheckoutResult
    from dsvc.workdir.index import Index

DEFAULT_BRANCH = "main"


class RemoteMixin:
    """`Repo` methods that talk to remotes."""

    store: DiskObjectStore
    refs: RefStore
    config: Config
    dsvc_dir: Path
    env: dict[str, str]
    if TYPE_CHECKING:  # provided by Repo

        @classmethod
        def init(cls, path: Path, branch: str = DEFAULT_BRANCH) -> tuple[Repo, bool]: ...
        @property
        def index(self) -> Index: ...
        def lock(self) -> WriterLock: ...
        def head_commit(self) -> ObjectId | None: ...
        def relative(self, path: str) -> str: ...
        def rev_parse(self, rev: str, commit: bool = False) -> ObjectId: ...
        def roots_of(self, commit: ObjectId | None) -> dict[str, ObjectId]: ...
        def _write_worktree(
            self, target_commit: ObjectId, force: bool, progress: Progress = no_progress
        ) -> CheckoutResult: ...

    def remotes(self) -> dict[str, settings.RemoteSettings]:
        return settings.remotes(self.config)

    def remote_add(self, name: str, url: str, endpoint: str | None = None, region: str | None = None) -> None:
        with self.lock():
            settings.add_remote(self.config, settings.RemoteSettings(name, url, endpoint, region))

    def remote_remove(self, name: str) -> None:
        """Forget a remote, its remote-tracking refs and its cached indexes."""
        with self.lock():
            settings.remove_remote(self.config, name)
            for ref, oid in self.refs.list_refs(f"refs/remotes/{name}/").items():
                self.refs.remove_if_equals(ref, oid, "remote: removed")
            shutil.rmtree(settings.cache_dir(self.dsvc_dir, name).parent, ignore_errors=True)

    def _remote(self, name: str) -> sync.Remote:
        return settings.open_remote(self.config, self.dsvc_dir, name, self.env)

    def push_refs(self, refs: Iterable[str] = ()) -> list[str]:
        """The full names of the refs a push sends: those named (short names allowed), else the current
        branch with every tag, checkpoint and inference set."""
        return sync.push_names(self.refs, refs)

    @bulk
    def push(
        self, remote: str, refs: Iterable[str] = (), force: bool = False, progress: Meter = no_meter
    ) -> PushResult:
        with self.lock():
            return sync.push(
                self.store, self.refs, self._remote(remote), self.push_refs(refs), force, progress
            )

    @bulk
    def fetch(self, remote: str, progress: Meter = no_meter) -> FetchResult:
        media = not settings.remotes(self.config)[settings.check_remote_name(remote)].lazy_media
        with self.lock():
            return sync.fetch(self.store, self.refs, self._remote(remote), media, progress)

    def pull(self, remote: str, progress: Meter = no_meter) -> tuple[FetchResult, ObjectId | None]:
        """Fetch, then fast-forward the current branch to its remote-tracking ref and check it out;
        return the commit checked out (None when already up to date)."""
        result = self.fetch(remote, progress)
        branch = self.refs.symbolic_target(HEAD)
        if branch is None:
            raise DsvcError("HEAD is detached: check out a branch to pull into")
        remote_tip = self.refs.read(self._remote(remote).tracking(branch))
        with self.lock():
            head = self.head_commit()
            if remote_tip is None or remote_tip == head or (head and descends(self.store, head, remote_tip)):
                return result, None
            if head is not None and not descends(self.store, remote_tip, head):
                raise DsvcError(f"{branch} and {remote}'s have diverged: merge is not supported yet")
            self._write_worktree(remote_tip, force=False)
            self.refs.set_if_equals(branch, head, remote_tip, f"pull: fast-forward from {remote}")
        return result, remote_tip

    def fetch_media_blobs(self, remote: str, blobs: list[ObjectId], progress: Meter = no_meter) -> int:
        """Fetch media blobs this clone lacks from a remote."""
        return sync.fetch_blobs(self.store, self._remote(remote), blobs, progress)[0]

    def fetch_media(
        self,
        paths: Iterable[str] = (),
        rev: str = HEAD,
        remote: str | None = None,
        progress: Meter = no_meter,
    ) -> int:
        """Fetch ahead the media of rev's files under paths (all when none); return how many were fetched."""
        name = remote or settings.lazy_media_remote(self.config)
        if name is None:
            raise DsvcError("no remote to fetch media from (this repository was not cloned without media)")
        files = self.roots_of(self.rev_parse(rev, commit=True))["files"]
        blobs = sync.blobs_under(self.store, files, [self.relative(p) for p in paths])
        with self.lock():
            return self.fetch_media_blobs(name, blobs, progress)

    @classmethod
    def clone(
        cls,
        url: str,
        dest: Path,
        endpoint: str | None = None,
        region: str | None = None,
        media: bool = True,
        env: Mapping[str, str] = {},
        remote: str = "origin",
        progress: Meter = no_meter,
        checkout: bool = True,
    ) -> tuple[Repo, FetchResult]:
        """Make a new repository from a remote with its main branch (or its first one), checked out unless
        not checkout. Without media, blobs are fetched on demand: by checkout for the files it writes,
        or ahead by `fetch_media`."""
        if dest.exists() and any(dest.iterdir()):
            raise InvalidInput("exists and is not empty", path=str(dest))
        existed = dest.exists()
        try:
            repo, _ = cls.init(dest)
            repo.env = dict(env)
            with repo.lock():
                settings.add_remote(
                    repo.config, settings.RemoteSettings(remote, url, endpoint, region, not media)
                )
            result = repo.fetch(remote, progress)
            if result.empty:
                raise RemoteError(f"nothing to clone: {url} is not a dsvc remote (or was never pushed to)")
            repo._start_branch(remote, url, checkout)
        except BaseException:  # a failed clone leaves nothing behind
            shutil.rmtree(dest / DSVC_DIR if existed else dest, ignore_errors=True)
            raise
        return repo, result

    def _start_branch(self, remote: str, url: str, checkout: bool) -> None:
        """After a clone's fetch: a local `main` (or the remote's first branch), checked out unless not."""
        tracking = self.refs.list_refs(f"refs/remotes/{remote}/")
        main = f"refs/remotes/{remote}/{DEFAULT_BRANCH}"
        start = main if main in tracking else next(iter(tracking), None)
        if start is None:
            return
        branch = "refs/heads/" + start[len(f"refs/remotes/{remote}/") :]
        with self.lock():
            if checkout:
                self._write_worktree(tracking[start], force=False)
            else:  # nothing is checked out: a later checkout writes every file
                self.index.update(staged=empty_roots())
            self.refs.add_if_new(branch, tracking[start], f"clone: from {url}")
            self.refs.set_symbolic(HEAD, branch, "clone")
