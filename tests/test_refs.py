"""Refs: compare-and-swap updates, symbolic HEAD, reflog, and names that cannot escape."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsvc.errors import BadRevision, LockHeld, RefConflict
from dsvc.hashing import ObjectId
from dsvc.refs import HEAD, RefStore, check_ref_name

A, B, C = (ObjectId(bytes([n]) * 32) for n in (1, 2, 3))


@pytest.fixture
def refs(tmp_path: Path) -> RefStore:
    return RefStore(tmp_path)


def test_compare_and_swap(refs: RefStore) -> None:
    refs.add_if_new("refs/heads/main", A)
    with pytest.raises(RefConflict):
        refs.add_if_new("refs/heads/main", B)
    with pytest.raises(RefConflict, match="changed underneath"):
        refs.set_if_equals("refs/heads/main", B, C)
    refs.set_if_equals("refs/heads/main", A, B)
    assert refs.read("refs/heads/main") == B
    with pytest.raises(RefConflict):
        refs.remove_if_equals("refs/heads/main", A)
    refs.remove_if_equals("refs/heads/main", B)
    assert refs.read("refs/heads/main") is None


def test_symbolic_head_follows_its_branch(refs: RefStore) -> None:
    refs.set_symbolic(HEAD, "refs/heads/main")
    assert refs.read(HEAD) is None
    refs.set_if_equals(HEAD, None, A)
    assert refs.read("refs/heads/main") == A and refs.symbolic_target(HEAD) == "refs/heads/main"
    refs.set_if_equals(HEAD, A, B, "commit: second")
    assert refs.read(HEAD) == B


def test_reflog_records_every_move(refs: RefStore) -> None:
    refs.add_if_new("refs/tags/v1", A, "create")
    refs.set_if_equals("refs/tags/v1", A, B, "move it")
    log = refs.reflog("refs/tags/v1")
    assert [(e.old, e.new, e.message) for e in log] == [(None, A, "create"), (A, B, "move it")]


def test_listing(refs: RefStore) -> None:
    refs.add_if_new("refs/heads/main", A)
    refs.add_if_new("refs/heads/feature/x", B)
    refs.add_if_new("refs/checkpoints/v0", C)
    assert refs.list_refs("refs/heads/") == {"refs/heads/feature/x": B, "refs/heads/main": A}
    assert set(refs.list_refs()) == {"refs/heads/main", "refs/heads/feature/x", "refs/checkpoints/v0"}


@pytest.mark.parametrize(
    "name",
    [
        "refs/heads/../../x",
        "refs/heads/.hidden",
        "refs/heads/a..b",
        "refs/heads/x.lock",
        "/etc/passwd",
        "refs/heads/a b",
        "refs/heads/a~1",
        "refs/heads/",
        "heads/main",
        "refs/heads/a@{1}",
        "refs//x",
    ],
)
def test_bad_ref_names_are_refused(refs: RefStore, name: str) -> None:
    with pytest.raises(BadRevision, match="invalid ref name"):
        check_ref_name(name)
    with pytest.raises(BadRevision):
        refs.add_if_new(name, A)


def test_a_held_ref_lock_is_reported(refs: RefStore, monkeypatch: pytest.MonkeyPatch) -> None:
    import dsvc.refs

    monkeypatch.setattr(dsvc.refs, "LOCK_WAIT_S", 0.05)
    refs.add_if_new("refs/heads/main", A)
    (refs.root / "refs/heads/main.lock").write_text("")
    with pytest.raises(LockHeld, match=r"main\.lock"):
        refs.set_if_equals("refs/heads/main", A, B)
    assert refs.read("refs/heads/main") == A


def test_failed_update_leaves_no_lock(refs: RefStore) -> None:
    refs.add_if_new("refs/heads/main", A)
    with pytest.raises(RefConflict):
        refs.set_if_equals("refs/heads/main", B, C)
    assert not (refs.root / "refs/heads/main.lock").exists()
    refs.set_if_equals("refs/heads/main", A, C)


def test_stale_ref_locks_are_removed_on_request(refs: RefStore) -> None:
    refs.add_if_new("refs/heads/main", A)
    (refs.root / "refs/heads/main.lock").write_text("")
    (refs.root / "HEAD.lock").write_text("")
    assert refs.remove_stale_locks() == 2
    refs.set_if_equals("refs/heads/main", A, B)
    assert refs.read("refs/heads/main") == B and refs.remove_stale_locks() == 0
