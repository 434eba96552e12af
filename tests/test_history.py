"""History: commits, checkpoint versions, log order, and every revision form."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsvc import history, tree
from dsvc.errors import BadRevision
from dsvc.hashing import ObjectId
from dsvc.objects import Checkpoint, Signature
from dsvc.repo import Repo


def _commit(repo: Repo, message: str, when: int) -> ObjectId:
    parent = repo.refs.read("HEAD")
    root = tree.build(repo.store, [(message.encode(), b"x")])
    oid = history.make_commit(
        repo.store, {"files": root}, (parent,) if parent else (), Signature("A", "a@x", when), message
    )
    repo.refs.set_if_equals("HEAD", parent, oid, f"commit: {message}")
    return oid


@pytest.fixture
def chain(repo_dir: Path) -> tuple[Repo, list[ObjectId]]:
    repo = Repo(repo_dir)
    return repo, [_commit(repo, f"c{i}", 1_000_000 + i) for i in range(4)]


def test_relative_revisions(chain: tuple[Repo, list[ObjectId]]) -> None:
    repo, ids = chain
    parse = repo.rev_parse
    assert parse("HEAD") == parse("main") == parse("refs/heads/main") == ids[3]
    assert parse("HEAD~1") == parse("HEAD^") == parse("main^1") == ids[2]
    assert parse("HEAD~3") == parse("HEAD^^~1") == parse("HEAD~2^") == ids[0]
    assert parse(ids[1].hex()) == parse(ids[1].hex()[:8]) == ids[1]
    with pytest.raises(BadRevision, match="history ends"):
        parse("HEAD~4")
    with pytest.raises(BadRevision, match="parent"):
        parse("HEAD^2")


def test_reflog_revisions(chain: tuple[Repo, list[ObjectId]]) -> None:
    repo, ids = chain
    assert repo.rev_parse("main@{0}") == ids[3]
    assert repo.rev_parse("main@{2}") == ids[1]
    assert repo.rev_parse("HEAD@{now}") == ids[3]
    with pytest.raises(BadRevision, match="did not exist"):
        repo.rev_parse("main@{2001-01-01}")
    with pytest.raises(BadRevision, match="reflog entries"):
        repo.rev_parse("main@{9}")
    with pytest.raises(BadRevision, match="cannot read the date"):
        repo.rev_parse("main@{last blue moon}")


def test_bad_revisions_say_what_is_wrong(chain: tuple[Repo, list[ObjectId]]) -> None:
    repo, _ = chain
    for rev, message in (
        ("nosuchrev", "unknown revision"),
        ("", "empty"),
        ("~1", "no name"),
        ("ffffffff", "unknown revision"),
        ("abc", "unknown revision"),
    ):
        with pytest.raises(BadRevision, match=message):
            repo.rev_parse(rev)


def test_ambiguous_short_ids(repo_dir: Path) -> None:
    repo = Repo(repo_dir)
    with repo.store.batch():
        ids = [repo.store.put(b"%d" % i) for i in range(5000)]
    prefixes: dict[str, int] = {}
    for oid in ids:
        prefixes[oid.hex()[:4]] = prefixes.get(oid.hex()[:4], 0) + 1
    shared = next(p for p, n in prefixes.items() if n > 1)
    with pytest.raises(BadRevision, match="ambiguous"):
        repo.rev_parse(shared)


def test_names_win_over_short_ids_and_checkpoints_peel(chain: tuple[Repo, list[ObjectId]]) -> None:
    repo, ids = chain
    who = Signature("A", "a@x", 5)
    cp = history.new_checkpoint(repo.store, "v0", ids[1], "first labels", {"owner": "qa"}, who)
    repo.refs.add_if_new("refs/checkpoints/v0", cp)
    assert repo.rev_parse("v0") == cp
    assert repo.rev_parse("v0", commit=True) == ids[1]
    assert repo.rev_parse("v0~1") == ids[0]
    name = ids[0].hex()[:6]
    repo.refs.add_if_new(f"refs/tags/{name}", ids[2])
    assert repo.rev_parse(name) == ids[2]


def test_checkpoint_edits_keep_their_history(chain: tuple[Repo, list[ObjectId]]) -> None:
    repo, ids = chain
    first = history.new_checkpoint(repo.store, "v0", ids[0], "labels", {}, Signature("A", "a", 1))
    second = history.revise_checkpoint(repo.store, first, Signature("B", "b", 2), description="fixed labels")
    third = history.revise_checkpoint(repo.store, second, Signature("B", "b", 3), archived=True)
    versions = [cp for _, cp in history.checkpoint_versions(repo.store, third)]
    assert [v.description for v in versions] == ["fixed labels", "fixed labels", "labels"]
    assert [v.archived for v in versions] == [True, False, False]
    assert all(isinstance(v, Checkpoint) and v.commit == ids[0] for v in versions)


def test_walk_is_newest_first_and_visits_each_commit_once(chain: tuple[Repo, list[ObjectId]]) -> None:
    repo, ids = chain
    merge = history.make_commit(repo.store, {}, (ids[3], ids[1]), Signature("A", "a", 2_000_000), "merge")
    walked = [oid for oid, _ in history.walk(repo.store, [merge])]
    assert walked == [merge, ids[3], ids[2], ids[1], ids[0]]
    assert history.is_ancestor(repo.store, ids[0], ids[3])
    assert not history.is_ancestor(repo.store, ids[3], ids[0])


def test_non_commits_are_refused_where_a_commit_is_needed(chain: tuple[Repo, list[ObjectId]]) -> None:
    repo, _ = chain
    blob = repo.store.put_blob(b"just bytes")
    obj = repo.store.put(b"not an object")
    with pytest.raises(BadRevision):
        repo.rev_parse(blob.hex(), commit=True)
    with pytest.raises(Exception, match=r"not a dsvc object|undecodable"):
        repo.rev_parse(obj.hex(), commit=True)
