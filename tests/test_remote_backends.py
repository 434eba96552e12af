"""One conformance suite for every remote backend: a local folder and S3 on a real SeaweedFS server."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from dsvc.errors import RemoteError
from dsvc.remote.backends import Backend, Fetched, NotOnRemote, PreconditionFailed, check_key, open_backend


@pytest.fixture(params=["folder", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "folder":
        return open_backend(str(tmp_path / "remote"))
    server = request.getfixturevalue("seaweed")
    return open_backend(request.getfixturevalue("s3_url"), env=server.settings())


def test_put_get_head_delete(backend: Backend) -> None:
    etag = backend.put("packs/a.pack", b"hello world")
    got = backend.get("packs/a.pack")
    assert got.data == b"hello world" and got.etag == etag
    stat = backend.head("packs/a.pack")
    assert stat is not None and stat.size == 11 and stat.etag == etag
    backend.delete("packs/a.pack")
    assert backend.head("packs/a.pack") is None
    with pytest.raises(NotOnRemote):
        backend.get("packs/a.pack")
    backend.delete("packs/a.pack")  # absent: not an error


def test_a_put_in_parts_writes_them_in_order(backend: Backend) -> None:
    mapped = memoryview(b"..views of a mapped pack..")
    parts = [b"header|", mapped[2:7], b"", mapped[8:10], b"|tail"]
    etag = backend.put("packs/b.pack", parts)
    assert backend.get("packs/b.pack") == Fetched(b"header|viewsof|tail", etag)


def test_overwrite_changes_the_etag(backend: Backend) -> None:
    first = backend.put("refs/heads/main", b"1")
    second = backend.put("refs/heads/main", b"22")
    assert first != second and backend.get("refs/heads/main").data == b"22"


def test_create_only_refuses_an_existing_key(backend: Backend) -> None:
    backend.put("config", b"v1", create=True)
    with pytest.raises(PreconditionFailed):
        backend.put("config", b"v2", create=True)
    assert backend.get("config").data == b"v1"


def test_if_match_moves_only_from_the_version_read(backend: Backend) -> None:
    etag = backend.put("refs/heads/main", b"a")
    newer = backend.put("refs/heads/main", b"b", if_match=etag)
    with pytest.raises(PreconditionFailed):
        backend.put("refs/heads/main", b"c", if_match=etag)
    assert backend.get("refs/heads/main").data == b"b"
    backend.put("refs/heads/main", b"d", if_match=newer)
    with pytest.raises(PreconditionFailed):
        backend.put("refs/heads/absent", b"x", if_match=etag)


def _race(backend: Backend, key: str, **condition: str | bool) -> list[int]:
    """Six writers put their number under key at once, all with the same condition; return the winners."""
    wins: list[int] = []

    def attempt(n: int) -> None:
        try:
            backend.put(key, str(n).encode(), **condition)  # type: ignore[arg-type]
            wins.append(n)
        except PreconditionFailed:
            pass

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return wins


def test_racing_conditional_writes_have_one_winner(backend: Backend) -> None:
    etag = backend.put("refs/heads/race", b"base")
    wins = _race(backend, "refs/heads/race", if_match=etag)
    assert len(wins) == 1 and backend.get("refs/heads/race").data == str(wins[0]).encode()


def test_racing_creates_have_one_winner(backend: Backend) -> None:
    wins = _race(backend, "refs/tags/once", create=True)
    assert len(wins) == 1 and backend.get("refs/tags/once").data == str(wins[0]).encode()


def test_ranges(backend: Backend) -> None:
    data = bytes(range(256)) * 1000
    backend.put("packs/r.pack", data)
    assert backend.get_ranges("packs/r.pack", [(0, 10), (1000, 1500), (255_990, 256_000)]) == [
        data[0:10],
        data[1000:1500],
        data[255_990:256_000],
    ]
    with pytest.raises(RemoteError):
        backend.get_ranges("packs/r.pack", [(255_990, 256_100)])
    with pytest.raises(NotOnRemote):
        backend.get_ranges("packs/none.pack", [(0, 1)])


def test_list_by_prefix(backend: Backend) -> None:
    for key in ("packs/a.pack", "packs/a.idx", "refs/heads/main", "refs/heads/dev/x", "config"):
        backend.put(key, key.encode())
    assert sorted(s.key for s in backend.list("refs/")) == ["refs/heads/dev/x", "refs/heads/main"]
    assert sorted((s.key, s.size) for s in backend.list("packs/")) == [
        ("packs/a.idx", 11),
        ("packs/a.pack", 12),
    ]
    assert list(backend.list("nothing/")) == []


@pytest.mark.parametrize(
    "key", ["", "/etc/passwd", "../x", "refs/../../x", "refs//x", "a/./b", "a b", ".tmp/x"]
)
def test_bad_keys_are_refused(backend: Backend, key: str) -> None:
    with pytest.raises(RemoteError):
        backend.put(key, b"x")
    with pytest.raises(RemoteError):
        backend.get(key)


def test_check_key_accepts_layout_names() -> None:
    assert check_key("packs/pack-" + "a" * 64 + ".pack")
    assert check_key("refs/checkpoints/v1.2")
