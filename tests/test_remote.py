"""Remotes end to end, through a local folder and through S3 on a real SeaweedFS server: push, clone,
time travel in the clone, incremental pushes, racing pushes, interrupted pushes, lazy media, and
remotes that lie."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import blake3
import pytest

from benchmarks import datagen
from dsvc import tree
from dsvc.atomic import Buffer
from dsvc.errors import NonFastForward, RemoteError
from dsvc.history import signature
from dsvc.objects import FileEntry
from dsvc.remote.backends import Backend, Fetched, Stat, open_backend
from dsvc.remote.layout import list_packs, pack_key
from dsvc.remote.sync import Remote, push
from dsvc.repo import Repo
from dsvc.store.packs import INDEX_HEADER, PackIndex
from dsvc.workdir.checkout import RENDER_APART_FROM
from tests.test_cli_workdir import SOURCE, coco

WHO = signature("tester", "tester@example.com")


@pytest.fixture(params=["folder", "s3"])
def remote_url(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict[str, str]]:
    """A fresh, empty remote and the store settings to reach it."""
    if request.param == "folder":
        return str(tmp_path / "remote"), {}
    return request.getfixturevalue("s3_url"), request.getfixturevalue("seaweed").settings()


@pytest.fixture
def s3_remote(s3_url: str, seaweed: Any) -> tuple[str, dict[str, str]]:
    return s3_url, seaweed.settings()


def make_repo(
    root: Path, frames: int = 40, media_size: int = 3000, env: dict[str, str] | None = None
) -> Repo:
    """A generated COCO dataset committed and checkpointed as v0."""
    datagen.generate(root, frames, media_size=media_size, seed=5)
    repo, _ = Repo.init(root)
    repo.env = dict(env or {})
    repo.source_add(SOURCE, "coco", "images")
    repo.add()
    repo.commit("v0", WHO)
    repo.checkpoint_create("v0", WHO, description="initial labels")
    return repo


def shared_repo(url: str, root: Path, **kwargs: Any) -> Repo:
    """A generated repository (see make_repo) with `origin` at url, pushed."""
    repo = make_repo(root, **kwargs)
    repo.remote_add("origin", url)
    repo.push("origin")
    return repo


def two_clients(remote_url: tuple[str, dict[str, str]], tmp_path: Path) -> tuple[Repo, Repo]:
    """A repository pushed to the remote, and a clone of it."""
    url, env = remote_url
    return shared_repo(url, tmp_path / "a", env=env), Repo.clone(url, tmp_path / "b", env=env)[0]


def relabel(repo: Repo, fraction: float, add: int, seed: int, name: str) -> None:
    datagen.mutate(repo.root, relabel=fraction, add=add, seed=seed)
    repo.add()
    repo.commit(name, WHO)
    repo.checkpoint_create(name, WHO)


def digest(root: Path, under: str = "images") -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): blake3.blake3(p.read_bytes()).hexdigest()
        for p in sorted((root / under).rglob("*"))
        if p.is_file()
    }


def coco_content(path: Path) -> Any:
    """A COCO file's content, independent of key and list order: semantic identity."""
    data = coco(path).dataset
    return {
        k: sorted(json.dumps(x, sort_keys=True) for x in data[k])
        for k in ("images", "categories", "annotations")
    }


def file_blobs(repo: Repo, rev: str) -> set[bytes]:
    files = repo.roots_of(repo.rev_parse(rev, commit=True))["files"]
    return {FileEntry.from_bytes(v).blob for _, v in tree.items(repo.store, files)}


def state(repo: Repo) -> dict[str, bytes]:
    """Every ref of a repository: what must not change when a remote operation fails."""
    return dict(repo.refs.list_refs())


def test_push_clone_and_time_travel(remote_url: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    url, env = remote_url
    repo = make_repo(tmp_path / "a", env=env)
    v0_media = digest(repo.root)
    v0_labels = coco_content(repo.root / SOURCE)
    relabel(repo, 0.1, 5, 2, "v1")
    repo.remote_add("origin", url)
    pushed = repo.push("origin")
    assert set(pushed.updated) == {"refs/heads/main", "refs/checkpoints/v0", "refs/checkpoints/v1"}
    assert pushed.packs == 2 and pushed.objects > 0
    assert repo.push("origin").updated == {}  # nothing new

    clone, fetched = Repo.clone(url, tmp_path / "b", env=env)
    assert fetched.objects == pushed.objects
    assert digest(clone.root) == digest(repo.root)
    clone.checkout("v0")
    assert digest(clone.root) == v0_media
    assert coco_content(clone.root / SOURCE) == v0_labels
    assert clone.fsck().ok
    assert clone.rev_parse("v1", commit=True) == repo.rev_parse("v1", commit=True)


def test_a_clone_large_enough_to_render_apart_is_its_origin(tmp_path: Path) -> None:
    """Through `python -m dsvc`, as users run it, with the source rendered by a second process."""
    repo = shared_repo(str(tmp_path / "remote"), tmp_path / "a", frames=RENDER_APART_FROM + 20, media_size=64)
    argv = [sys.executable, "-m", "dsvc", "clone", str(tmp_path / "remote"), str(tmp_path / "b"), "-q"]
    proc = subprocess.run(argv, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == "", proc.stderr
    clone = Repo(tmp_path / "b")
    assert digest(clone.root) == digest(repo.root)
    assert coco_content(clone.root / SOURCE) == coco_content(repo.root / SOURCE)
    assert clone.status().clean and clone.fsck().ok


def test_inference_sets_travel_and_evaluate_the_same(
    remote_url: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    url, env = remote_url
    repo = make_repo(tmp_path / "a", env=env)
    predictions = repo.root / "predictions" / "model_a.json"
    version = repo.metrics.infer_import("model_a", predictions, "coco", WHO, model="yolo-a")
    repo.remote_add("origin", url)
    assert "refs/inferences/model_a" in repo.push("origin").updated

    clone, _ = Repo.clone(url, tmp_path / "b", env=env)
    ((oid, found),) = clone.metrics.inferences()
    assert oid == version and found.name == "model_a" and found.model == "yolo-a"
    there = clone.metrics.evaluate("model_a", "v0")[2]
    here = repo.metrics.evaluate("model_a", "v0")[2]
    assert there.stats == here.stats and there.frames.evaluated == 40
    assert clone.fsck().ok


def test_incremental_push_sends_about_the_new_bytes(
    remote_url: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    url, env = remote_url
    repo = shared_repo(url, tmp_path / "a", frames=200, env=env)
    before = set(repo.store.iter_blobs())
    objects_before = {oid for oid, _ in repo.store.iter_stored()}
    relabel(repo, 0.01, 2, 3, "v1")
    new = {oid: repo.store.stored_bytes(oid) for oid, _ in repo.store.iter_stored()}
    new_bytes = sum(len(v) for k, v in new.items() if k not in objects_before and k not in before)
    result = repo.push("origin")
    index_overhead = 2 * (INDEX_HEADER.size + 1024 + 32) + 76 * result.objects
    assert result.bytes <= 1.2 * new_bytes + index_overhead + 2 * 12
    assert result.packs == 2  # structured objects, and the two new images


def test_racing_pushes_have_one_winner(s3_remote: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    url, env = s3_remote
    shared_repo(url, tmp_path / "a", env=env)
    clients = [Repo.clone(url, tmp_path / f"c{i}", env=env)[0] for i in range(2)]
    for i, client in enumerate(clients):
        relabel(client, 0.1, 1, 10 + i, f"work-{i}")
    outcomes: dict[int, Exception | None] = {}

    def run(i: int) -> None:
        try:
            clients[i].push("origin", ["main"])
            outcomes[i] = None
        except NonFastForward as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, exc in outcomes.items() if exc is None]
    assert len(winners) == 1, outcomes
    loser = clients[1 - winners[0]]
    assert "fetch" in str(outcomes[1 - winners[0]])
    check, _ = Repo.clone(url, tmp_path / "check", env=env)
    assert check.rev_parse("main") == clients[winners[0]].rev_parse("main")
    assert [e.id for e in check.log()] == [e.id for e in clients[winners[0]].log()]
    assert check.fsck().ok and loser.fsck().ok


def test_non_fast_forward_and_force(remote_url: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    a, b = two_clients(remote_url, tmp_path)
    relabel(a, 0.1, 0, 4, "from-a")
    a.push("origin", ["main"])
    relabel(b, 0.1, 0, 5, "from-b")
    with pytest.raises(NonFastForward, match="fetch"):
        b.push("origin", ["main"])
    forced = b.push("origin", ["main"], force=True)
    assert forced.updated["refs/heads/main"] == (a.rev_parse("main").hex(), b.rev_parse("main").hex())
    a.fetch("origin")
    assert a.rev_parse("refs/remotes/origin/main") == b.rev_parse("main")


class FailingBackend(Backend):
    """A real backend that fails after a number of puts: a push killed mid-upload."""

    def __init__(self, inner: Backend, puts: int) -> None:
        self.inner = inner
        self.url = inner.url
        self.left = puts
        self.sent: list[str] = []

    def put(self, key: str, data: bytes, *, create: bool = False, if_match: str | None = None) -> str:
        if self.left <= 0:
            raise RemoteError(f"{self.url}: connection reset")
        self.left -= 1
        self.sent.append(key)
        return self.inner.put(key, data, create=create, if_match=if_match)

    def get(self, key: str) -> Fetched:
        return self.inner.get(key)

    def get_ranges(self, key: str, ranges: Any) -> list[Buffer]:
        return self.inner.get_ranges(key, ranges)

    def head(self, key: str) -> Stat | None:
        return self.inner.head(key)

    def list(self, prefix: str) -> Any:
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self.inner.delete(key)


def test_interrupted_push_resumes_without_resending(
    remote_url: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    url, env = remote_url
    repo = make_repo(tmp_path / "a", frames=120, media_size=20_000, env=env)
    cache = tmp_path / "cache"
    refs = repo.push_refs()
    failing = FailingBackend(open_backend(url, env=env), puts=7)  # config, then 3 packs with indexes
    with pytest.raises(RemoteError, match="connection reset"):
        _push(repo, Remote("origin", failing, cache), refs)
    finished, _ = list_packs(failing.inner)
    assert finished and not [k for k in failing.sent if k.startswith("refs/")]
    assert repo.fsck().ok
    again = FailingBackend(failing.inner, puts=10_000)
    result = _push(repo, Remote("origin", again, cache), refs)
    assert not {k for k in again.sent if k.endswith(".pack")} & {pack_key(n, "pack") for n in finished}
    everything = sum(s.size for s in again.inner.list("packs/"))
    already = sum(s.size for s in finished.values())
    assert result.bytes <= everything - already
    clone, _ = Repo.clone(url, tmp_path / "b", env=env)
    assert digest(clone.root) == digest(repo.root) and clone.fsck().ok


def _push(repo: Repo, remote: Remote, refs: list[str]) -> Any:
    with repo.lock():  # small packs, so the upload has many
        return push(repo.store, repo.refs, remote, refs, pack_target=256 << 10)


def test_clone_without_media_fetches_media_on_checkout(
    s3_remote: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    url, env = s3_remote
    repo = make_repo(tmp_path / "a", env=env)
    v0_media = digest(repo.root)
    relabel(repo, 0.1, 6, 2, "v1")
    repo.remote_add("origin", url)
    repo.push("origin")
    clone, _ = Repo.clone(url, tmp_path / "b", media=False, env=env)
    assert digest(clone.root) == digest(repo.root)  # checkout fetched exactly the media it wrote
    assert set(clone.store.iter_blobs()) == file_blobs(clone, "main")
    clone.checkout("v0")
    assert digest(clone.root) == v0_media
    assert clone.fsck().ok


def test_pull_media_fetches_ahead(s3_remote: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    url, env = s3_remote
    repo = make_repo(tmp_path / "a", env=env)
    relabel(repo, 0.0, 6, 2, "v1")
    repo.remote_add("origin", url)
    repo.push("origin")
    clone, _ = Repo.clone(url, tmp_path / "b", media=False, env=env, checkout=False)
    assert not set(clone.store.iter_blobs())
    assert clone.fetch_media(["images"], rev="v1") == len(digest(repo.root))
    assert clone.fetch_media(rev="v1") == len(file_blobs(repo, "v1")) - len(digest(repo.root))
    assert set(clone.store.iter_blobs()) == file_blobs(repo, "v1")
    clone.checkout("main")  # nothing was checked out, so nothing is lost: every file is written
    assert digest(clone.root) == digest(repo.root) and clone.fsck().ok
    assert clone.status().clean


def _tamper(backend: Backend, change: Callable[[str, bytes], bytes | None]) -> None:
    for name in list_packs(backend)[0]:
        for ext in ("pack", "idx"):
            key = pack_key(name, ext)
            new = change(key, backend.get(key).data)
            if new is not None:
                backend.put(key, new)


def _refused(clone_from: str, env: dict[str, str], dest: Path, needle: str) -> None:
    with pytest.raises(RemoteError, match=needle):
        Repo.clone(clone_from, dest, env=env)
    assert not dest.exists()  # a failed clone leaves nothing behind


def test_a_remote_that_lies_is_refused(remote_url: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    url, env = remote_url
    repo = shared_repo(url, tmp_path / "a", env=env)
    backend = open_backend(url, env=env)
    before = state(repo)
    relabel(repo, 0.2, 0, 7, "later")
    mine = state(repo)

    # An object whose bytes do not match its id (one byte flipped in a media pack).
    def flip(key: str, data: bytes) -> bytes | None:
        if key.endswith(".pack") and "media-" in key:
            return data[:100] + bytes([data[100] ^ 1]) + data[101:]
        return None

    _tamper(backend, flip)
    _refused(url, env, tmp_path / "b", "does not match its id")
    _tamper(backend, flip)  # restored

    # An index pointing past its pack (checksum recomputed, so only the bounds check can catch it).
    def stretch(key: str, data: bytes) -> bytes | None:
        if not key.endswith(".idx"):
            return None
        index = PackIndex.parse(data, key.rsplit("/", 1)[1][:-4])
        body = bytearray(data[:-32])
        at = INDEX_HEADER.size + 1024 + 32 * len(index) + 8 * (len(index) - 1)
        body[at : at + 8] = (int(index.offsets[-1]) + 10**6).to_bytes(8, "little")
        return bytes(body) + blake3.blake3(bytes(body)).digest()

    originals = {n: backend.get(pack_key(n, "idx")).data for n in list_packs(backend)[0]}
    _tamper(backend, stretch)
    _refused(url, env, tmp_path / "c", "points past")
    for name, data in originals.items():
        backend.put(pack_key(name, "idx"), data)

    # Ref names that climb out of refs/.
    backend.put("refs/heads/a..b", b"0" * 64)
    _refused(url, env, tmp_path / "d", "invalid ref name")
    with pytest.raises(RemoteError, match="invalid ref name"):
        repo.fetch("origin")
    backend.delete("refs/heads/a..b")

    assert state(repo) == mine and mine != before
    assert repo.fsck().ok
    Repo.clone(url, tmp_path / "e", env=env)  # the remote, repaired, clones fine


def test_cloning_nothing_is_an_error(tmp_path: Path) -> None:
    _refused(str(tmp_path / "no-such-remote"), {}, tmp_path / "c", "nothing to clone")


def test_bad_remote_names_and_urls(tmp_path: Path) -> None:
    repo, _ = Repo.init(tmp_path / "r")
    for name in ("../x", "a/b", "", ".hidden"):
        with pytest.raises(Exception, match="invalid remote name"):
            repo.remote_add(name, str(tmp_path / "x"))
    with pytest.raises(Exception, match="unsupported remote URL"):
        repo.remote_add("x", "ftp://host/path")


def test_the_cli_contract(s3_remote: tuple[str, dict[str, str]], tmp_path: Path, seaweed: Any) -> None:
    """`remote add`, `push --json`, `clone`, `fetch`, `pull` through S3 with the endpoint and credentials from
    the standard environment; nothing secret lands in the repository's files."""
    url, _ = s3_remote
    env = {**os.environ, **{k: v for k, v in seaweed.env().items() if k != "AWS_ENDPOINT_URL"}}
    make_repo(tmp_path / "a")

    def run(*args: str, cwd: Path, ok: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "dsvc", *args], cwd=cwd, env=env, capture_output=True, text=True
        )
        assert (proc.returncode == 0) == ok, proc.stderr
        return proc

    a = tmp_path / "a"
    run("remote", "add", "origin", url, "--endpoint", seaweed.endpoint, cwd=a)
    pushed = json.loads(run("push", "origin", "--json", cwd=a).stdout)
    assert {"remote", "objects", "bytes", "packs", "updated"} <= set(pushed)
    assert pushed["remote"] == "origin" and pushed["packs"] == 2
    old, new = pushed["updated"]["refs/heads/main"]
    assert old is None and len(new) == 64
    assert seaweed.env()["AWS_SECRET_ACCESS_KEY"] not in (a / ".dsvc" / "config").read_text()
    run("clone", url, "b", "--endpoint", seaweed.endpoint, cwd=tmp_path)
    assert digest(tmp_path / "b") == digest(a)
    assert "origin" in run("remote", "list", cwd=tmp_path / "b").stdout
    datagen.mutate(a, relabel=0.1, add=2, seed=3)
    run("add", ".", cwd=a)
    run("commit", "-m", "more", cwd=a)
    run("push", cwd=a)
    pulled = json.loads(run("pull", "--json", cwd=tmp_path / "b").stdout)
    assert pulled["checked_out"] == run("rev-parse", "HEAD", cwd=a).stdout.strip()
    assert digest(tmp_path / "b") == digest(a)
    assert coco_content(tmp_path / "b" / SOURCE) == coco_content(a / SOURCE)
    bad = run("push", "nowhere", cwd=a, ok=False)
    assert bad.stderr.startswith("dsvc: error: ") and "no such remote" in bad.stderr


@pytest.mark.parametrize("command", ["remote", "push", "fetch", "pull", "clone"])
def test_remote_commands_have_help_with_examples(tmp_path: Path, command: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "dsvc", command, "--help"], capture_output=True, text=True
    ).stdout
    assert "Examples:" in out and f"dsvc {command}" in out


def test_a_remote_whose_refs_reach_missing_objects_is_refused(
    remote_url: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    url, env = remote_url
    shared_repo(url, tmp_path / "a", env=env)
    backend = open_backend(url, env=env)
    backend.put("refs/heads/ghost", b"ab" * 32 + b"\n")
    other = make_repo(tmp_path / "b", env=env)
    other.remote_add("origin", url)
    before = state(other)
    with pytest.raises(RemoteError, match="incomplete"):
        other.fetch("origin")
    assert state(other) == before and other.fsck().ok
    assert not list((other.dsvc_dir / "remotes").rglob("*.idx"))  # nothing cached either


def test_fetch_brings_checkpoints_and_reports_diverged_ones(
    remote_url: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    a, b = two_clients(remote_url, tmp_path)
    a.checkpoint_edit("v0", WHO, description="edited in a")
    relabel(a, 0.1, 0, 8, "v1")
    a.push("origin")
    b.checkpoint_create("v1", WHO, description="b's own v1")
    fetched = b.fetch("origin")
    assert fetched.updated["refs/checkpoints/v0"][1] == a.rev_parse("refs/checkpoints/v0").hex()
    assert b.checkpoint("v0")[1].description == "edited in a"
    assert "refs/checkpoints/v1" in fetched.rejected and b.checkpoint("v1")[1].description == "b's own v1"
    with pytest.raises(NonFastForward):
        b.push("origin", ["v1"])


def test_a_push_does_not_make_a_fetch_skip_what_others_pushed(
    remote_url: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    a, b = two_clients(remote_url, tmp_path)
    relabel(b, 0.1, 3, 9, "from-b")
    b.push("origin", ["main", "from-b"])
    a.checkpoint_edit("v0", WHO, description="a pushes while b's packs are new to it")
    a.push("origin", ["v0"])  # reads (and caches) the indexes of b's packs, fetches nothing
    fetched = a.fetch("origin")
    assert fetched.objects > 0
    assert a.rev_parse("refs/remotes/origin/main") == b.rev_parse("main") and a.fsck().ok


def test_unexpected_names_under_packs_are_refused(tmp_path: Path) -> None:
    url = str(tmp_path / "remote")
    shared_repo(url, tmp_path / "a")
    open_backend(url).put("packs/evil.sh", b"#!/bin/sh\n")
    _refused(url, {}, tmp_path / "b", "unexpected pack name")


def test_pull_media_on_the_command_line(tmp_path: Path) -> None:
    url = str(tmp_path / "remote")
    repo = shared_repo(url, tmp_path / "a")

    def run(*args: str, cwd: Path) -> Any:
        proc = subprocess.run(
            [sys.executable, "-m", "dsvc", *args, "--json"], cwd=cwd, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    run("clone", url, "b", "--no-media", "--no-checkout", cwd=tmp_path)
    assert run("pull", "--media", "images", cwd=tmp_path / "b") == {"media": len(digest(repo.root))}
    assert run("pull", "--media", cwd=tmp_path / "b")["media"] == len(file_blobs(repo, "main")) - len(
        digest(repo.root)
    )
