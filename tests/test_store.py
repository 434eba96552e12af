"""Object store conformance: every implementation passes the same suite (DESIGN §5)."""

from __future__ import annotations

import contextlib
import os
import tempfile
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dsvc import codec
from dsvc.errors import CorruptObject, ObjectMissing
from dsvc.hashing import ObjectId, hash_bytes, hash_file
from dsvc.store import DiskObjectStore, MemoryObjectStore, ObjectStore
from dsvc.store.packs import PackIndex, write_pack


def _corrupt_memory(store: ObjectStore, oid: ObjectId, position: int, xor: int) -> None:
    assert isinstance(store, MemoryObjectStore)
    stored = bytearray(store.objects[oid])
    stored[position % len(stored)] ^= xor
    store.objects[oid] = bytes(stored)


def _corrupt_disk(store: ObjectStore, oid: ObjectId, position: int, xor: int) -> None:
    assert isinstance(store, DiskObjectStore)
    for reader in store.packs():
        where = reader.index.find(oid)
        if where >= 0:
            offset = int(reader.index.offsets[where]) + position % int(reader.index.lengths[where])
            path = reader.path
            break
    else:
        raise AssertionError("object not found")
    data = bytearray(path.read_bytes())
    data[offset] ^= xor
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    store._packs.clear()  # re-map the damaged file


Factory = Callable[[Path], tuple[ObjectStore, Callable[[ObjectStore, ObjectId, int, int], None]]]
FACTORIES: dict[str, Factory] = {
    "memory": lambda _: (MemoryObjectStore(), _corrupt_memory),
    "disk": lambda tmp: (DiskObjectStore.create(tmp / "objects"), _corrupt_disk),
}


@pytest.fixture(params=sorted(FACTORIES))
def make_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[], tuple]:
    counter = iter(range(10**9))
    return lambda: FACTORIES[request.param](tmp_path_factory.mktemp(f"store{next(counter)}"))


class TestObjectStoreConformance:
    def test_put_get_round_trip(self, make_store: Callable[[], tuple]) -> None:
        store, _ = make_store()
        data = [os.urandom(n) for n in (0, 1, 100, 5000)] + [b"compressible " * 500]
        with store.batch():
            ids = [store.put(d) for d in data]
        assert ids == [hash_bytes(d) for d in data]
        assert [store.get(i) for i in ids] == data
        assert store.contains_many([*ids, b"\0" * 32]) == [True] * len(ids) + [False]

    def test_get_many_reads_in_the_order_given(self, make_store: Callable[[], tuple]) -> None:
        store, corrupt = make_store()
        with store.batch():
            first = [store.put(b"first %d" % i) for i in range(50)]
        with store.batch():
            second = [store.put(b"second %d" % i) for i in range(50)]
        order = [*second[::-1], *first[::2]]
        assert [data for _, data in store.get_many(order)] == [store.get(o) for o in order]
        with pytest.raises(ObjectMissing):
            list(store.get_many([first[0], ObjectId(b"\7" * 32)]))
        corrupt(store, first[3], 5, 1)
        with pytest.raises(CorruptObject, match=first[3].hex()):
            list(store.get_many(first))

    def test_put_twice_stores_once(self, make_store: Callable[[], tuple]) -> None:
        store, _ = make_store()
        with store.batch():
            store.put(b"same")
            store.put(b"same")
        store.put(b"same")
        assert store.counters.writes == 1
        assert sum(1 for _ in store.iter_stored()) == 1

    def test_objects_are_visible_inside_their_batch(self, make_store: Callable[[], tuple]) -> None:
        store, _ = make_store()
        with store.batch():
            oid = store.put(b"pending")
            assert store.get(oid) == b"pending"
            assert store.contains(oid)

    def test_drain_writes_out_a_batch_that_still_ends_as_one(self, make_store: Callable[[], tuple]) -> None:
        store, _ = make_store()
        with store.batch():
            first = store.put(b"before the drain")
            store.drain()
            assert store.counters.writes == 1 and store.get(first) == b"before the drain"
            second = store.put(b"after it")
        assert store.counters.writes == 2 and store.get(second) == b"after it"
        store.drain()  # outside a batch there is nothing to drain
        assert store.counters.writes == 2

    def test_a_failed_batch_leaves_nothing(self, make_store: Callable[[], tuple], tmp_path: Path) -> None:
        store, _ = make_store()
        media = tmp_path / "m.bin"
        media.write_bytes(b"media bytes")
        with pytest.raises(RuntimeError), store.batch():
            oid = store.put(b"doomed")
            blob, _ = store.put_blob_file(media)
            raise RuntimeError("crash")
        assert not store.contains(oid)
        assert not store.has_blob(blob)

    def test_missing_object(self, make_store: Callable[[], tuple]) -> None:
        store, _ = make_store()
        with pytest.raises(ObjectMissing):
            store.get(ObjectId(b"\1" * 32))
        with pytest.raises(ObjectMissing):
            store.read_blob(ObjectId(b"\1" * 32))

    def test_blobs_round_trip_and_hash_like_b3sum(
        self, make_store: Callable[[], tuple], tmp_path: Path
    ) -> None:
        store, _ = make_store()
        path = tmp_path / "frame.jpg"
        path.write_bytes(os.urandom(3 << 20))
        with store.batch():
            oid, size = store.put_blob_file(path)
        assert oid == hash_file(path) and size == 3 << 20
        assert store.has_blob(oid) and store.read_blob(oid) == path.read_bytes()
        store.copy_blob(oid, tmp_path / "out.jpg")
        assert (tmp_path / "out.jpg").read_bytes() == path.read_bytes()
        assert list(store.iter_blobs()) == [oid]

    def test_prefix_lookup(self, make_store: Callable[[], tuple]) -> None:
        store, _ = make_store()
        with store.batch():
            ids = [store.put(b"object %d" % i) for i in range(300)]
        blob = store.put_blob(b"a blob")
        for oid in [*ids[:20], blob]:
            assert store.find_prefix(oid.hex()[:10]) == [oid]
        assert all(o.hex().startswith(ids[0].hex()[:4]) for o in store.find_prefix(ids[0].hex()[:4]))

    def test_batched_lookup_matches_single_lookups(self, make_store: Callable[[], tuple]) -> None:
        store, _ = make_store()
        with store.batch():
            present = [store.put(os.urandom(50)) for _ in range(500)]
        absent = [ObjectId(os.urandom(32)) for _ in range(500)]
        # ids that end in NUL bytes are where numpy's fixed-width bytes get subtle
        absent.append(ObjectId(present[0][:-1] + b"\0"))
        wanted = present + absent
        assert (
            store.contains_many(wanted) == [store.contains(o) for o in wanted] == [True] * 500 + [False] * 501
        )

    def test_packed_blob_corruption_is_detected(
        self, make_store: Callable[[], tuple], tmp_path: Path
    ) -> None:
        store, corrupt = make_store()
        media = tmp_path / "frame.jpg"
        media.write_bytes(b"\xff\xd8\xff" + os.urandom(5000))
        oid, _ = store.put_blob_file(media)
        corrupt(store, oid, 100, 1)
        with pytest.raises(CorruptObject, match=oid.hex()):
            store.read_blob(oid)
        with pytest.raises(CorruptObject):
            store.copy_blob(oid, tmp_path / "out.jpg")
        assert not (tmp_path / "out.jpg").exists()
        assert [bad for bad, _ in store.verify()] == [oid]

    @given(data=st.data())
    def test_no_single_byte_corruption_yields_other_bytes(
        self, make_store: Callable[[], tuple], data: st.DataObject
    ) -> None:
        """A flipped byte is refused, naming the object, and fsck lists it; or, when it is one the decoder
        never reads (zstd's unused frame-header bit), the object still reads back exactly."""
        store, corrupt = make_store()
        payload = data.draw(st.binary(min_size=1, max_size=400) | st.just(b"label " * 100))
        oid = store.put(payload)
        position = data.draw(st.integers(0, 10_000))
        corrupt(store, oid, position, data.draw(st.integers(1, 255)))
        try:
            intact = store.get(oid) == payload
        except CorruptObject as exc:
            assert oid.hex() in str(exc)
            assert [bad for bad, _ in store.verify()] == [oid]
        else:
            assert intact and not list(store.verify())


def test_disk_store_reopens_and_sees_other_writers(tmp_path: Path) -> None:
    store = DiskObjectStore.create(tmp_path / "objects")
    oid = store.put(b"first")
    other = DiskObjectStore(tmp_path / "objects")
    assert other.get(oid) == b"first"
    later = other.put(b"written by another process")
    assert store.get(later) == b"written by another process"


def test_another_process_is_offered_the_store_only_when_it_would_see_everything(tmp_path: Path) -> None:
    store = DiskObjectStore.create(tmp_path / "objects")
    assert store.shared_root() == tmp_path / "objects"
    with store.batch():
        store.put(b"not yet visible to anyone else")
        assert store.shared_root() is None
    assert store.shared_root() == tmp_path / "objects"
    assert MemoryObjectStore().shared_root() is None


def test_one_batch_writes_one_pack(tmp_path: Path) -> None:
    store = DiskObjectStore.create(tmp_path / "objects")
    with store.batch():
        for i in range(1000):
            store.put(b"object %d" % i)
    assert len(list((tmp_path / "objects" / "packs").glob("*.pack"))) == 1
    assert len(list((tmp_path / "objects" / "packs").glob("*.idx"))) == 1


def test_a_drained_then_failed_batch_leaves_no_pack(tmp_path: Path) -> None:
    store = DiskObjectStore.create(tmp_path / "objects")
    with pytest.raises(RuntimeError), store.batch():
        oid = store.put(b"drained, then doomed")
        store.drain()
        raise RuntimeError("crash")
    assert not store.contains(oid)
    assert not list((tmp_path / "objects" / "packs").iterdir())


# Byte positions in a one-entry index: the fanout table, the id, the offset, the length.
INDEX_REGIONS = {"fanout": 16 + 4 * 200, "id": 1040 + 5, "offset": 1072, "length": 1080}


@pytest.mark.parametrize("region", INDEX_REGIONS)
def test_a_damaged_pack_index_is_named_by_its_checksum_and_never_yields_wrong_bytes(
    tmp_path: Path, region: str
) -> None:
    store = DiskObjectStore.create(tmp_path / "objects")
    content = b"x" * 100
    oid = store.put(content)
    (idx,) = (tmp_path / "objects" / "packs").glob("*.idx")
    data = bytearray(idx.read_bytes())
    data[INDEX_REGIONS[region]] ^= 0x41
    idx.write_bytes(bytes(data))
    with pytest.raises(CorruptObject, match="damaged"):
        PackIndex.parse(bytes(data), idx.stem)  # how an index a remote sends is read
    reopened = DiskObjectStore(tmp_path / "objects")  # opening maps the index without hashing it
    assert [name for name, _ in reopened.index_problems()] == [idx.name]
    with contextlib.suppress(CorruptObject, ObjectMissing):  # refusing is right; other bytes never are
        assert reopened.get(oid) == content


def test_a_truncated_pack_index_is_refused_on_open(tmp_path: Path) -> None:
    store = DiskObjectStore.create(tmp_path / "objects")
    store.put(b"z" * 100)
    (idx,) = (tmp_path / "objects" / "packs").glob("*.idx")
    idx.write_bytes(idx.read_bytes()[:-1])
    with pytest.raises(CorruptObject, match="damaged"):
        PackIndex.load(idx)
    idx.write_bytes(b"")
    with pytest.raises(CorruptObject, match="truncated"):
        PackIndex.load(idx)


def test_index_pointing_past_its_pack_is_refused(tmp_path: Path) -> None:
    store = DiskObjectStore.create(tmp_path / "objects")
    store.put(b"y" * 100)
    (pack,) = (tmp_path / "objects" / "packs").glob("*.pack")
    pack.write_bytes(pack.read_bytes()[:20])
    with pytest.raises(CorruptObject, match="past the end"):
        DiskObjectStore(tmp_path / "objects").get(hash_bytes(b"y" * 100))


def test_corrupt_loose_blob_is_detected(tmp_path: Path) -> None:
    store = DiskObjectStore.create(tmp_path / "objects")
    oid = store.put_blob(b"media" * 300_000)
    path = store.loose.path(oid)
    path.chmod(0o644)
    path.write_bytes(b"media" * 299_999 + b"MEDIA")
    with pytest.raises(CorruptObject, match=oid.hex()):
        store.read_blob(oid)
    with pytest.raises(CorruptObject):
        store.copy_blob(oid, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [bad for bad, _ in store.verify()] == [oid]


def test_loose_blobs_are_read_only(tmp_path: Path) -> None:
    store = DiskObjectStore.create(tmp_path / "objects")
    oid = store.put_blob(b"frame" * 300_000)
    assert store.loose.path(oid).stat().st_mode & 0o222 == 0


def test_small_blobs_live_in_packs_large_ones_on_their_own(tmp_path: Path) -> None:
    store = DiskObjectStore.create(tmp_path / "objects")
    small, large = os.urandom(20_000), os.urandom(2 << 20)
    with store.batch():
        ids = [store.put_blob(small), store.put_blob(large)]
    assert not store.loose.path(ids[0]).exists() and store.loose.path(ids[1]).exists()
    assert [store.read_blob(i) for i in ids] == [small, large]
    assert sorted(store.iter_blobs()) == sorted(ids) and all(store.has_blob(i) for i in ids)
    assert not store.has_blob(store.put(b"an object, not a blob"))


def test_has_blobs_answers_as_has_blob_for_packed_loose_pending_and_absent_blobs(tmp_path: Path) -> None:
    store = DiskObjectStore.create(tmp_path / "objects")
    packed, loose = store.put_blob(os.urandom(20_000)), store.put_blob(os.urandom(2 << 20))
    sibling = ObjectId(loose[:2] + bytes(30))  # shares the loose blob's folders, is not there
    absent = hash_bytes(b"never stored")
    with store.batch():
        pending = store.put_blob(os.urandom(2 << 20))
        asked = [absent, loose, packed, sibling, pending]
        assert (
            store.has_blobs(asked) == [store.has_blob(i) for i in asked] == [False, True, True, False, True]
        )
    assert store.has_blobs(asked) == [False, True, True, False, True]
    assert DiskObjectStore.create(tmp_path / "empty").has_blobs(asked) == [False] * 5


def test_storing_a_large_file_streams_in_constant_memory(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    chunk = os.urandom(1 << 20)
    with open(big, "wb") as handle:
        for _ in range(64):
            handle.write(chunk)
    store = DiskObjectStore.create(tmp_path / "objects")
    tracemalloc.start()
    oid, size = store.put_blob_file(big)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert size == 64 << 20 and oid == hash_file(big)
    assert peak < 8 << 20, f"peak {peak} bytes while storing a 64 MiB file"


def test_pack_index_lookup_uses_fanout(tmp_path: Path) -> None:
    store = DiskObjectStore.create(tmp_path / "objects")
    with store.batch():
        ids = [store.put(b"%d" % i) for i in range(2000)]
    (reader,) = store.packs()
    index = reader.index
    assert int(index.fanout[-1]) == len(index) == 2000
    assert np.all(index.ids[:-1] < index.ids[1:])
    assert all(index.find(o) >= 0 for o in ids[:100])


@given(
    st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=40, unique=True),
    st.lists(st.binary(min_size=32, max_size=32), max_size=20),
    st.binary(min_size=8, max_size=8),
)
def test_many_ids_are_found_where_one_is_even_when_ids_share_their_first_bytes(
    stored: list[bytes], others: list[bytes], shared: bytes
) -> None:
    # Half the ids start with the same 8 bytes: find_many narrows by those bytes first.
    stored = list(dict.fromkeys(shared + oid[8:] if i % 2 else oid for i, oid in enumerate(stored)))
    others = [shared + oid[8:] if i % 2 else oid for i, oid in enumerate(others)]
    with tempfile.TemporaryDirectory() as tmp:
        name = write_pack(Path(tmp), sorted((ObjectId(oid), codec.frame(oid)) for oid in stored))
        index = PackIndex.load(Path(tmp) / f"{name}.idx")
        asked = stored + others
        found = index.find_many(np.array(asked, dtype="S32")).tolist()
        assert found == [index.find(oid) for oid in asked]
        assert all((pos >= 0) == (oid in stored) for oid, pos in zip(asked, found, strict=True))
        assert all(index.id_at(pos) == oid for oid, pos in zip(asked, found, strict=True) if pos >= 0)


def test_blobs_are_readable_inside_their_batch(make_store: Callable[[], tuple], tmp_path: Path) -> None:
    store, _ = make_store()
    with store.batch():
        oid = store.put_blob(b"fresh media")
        assert store.has_blob(oid) and store.read_blob(oid) == b"fresh media"
        assert store.put_blob(b"fresh media") == oid
    assert store.read_blob(oid) == b"fresh media"


def test_many_small_packs_are_merged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dsvc.store.disk as disk

    monkeypatch.setattr(disk, "MAX_PACKS", 4)
    store = DiskObjectStore.create(tmp_path / "objects")
    ids = [store.put(b"object %d" % i) for i in range(12)]
    assert len(store.packs()) <= 4
    assert len(list((tmp_path / "objects" / "packs").glob("*.idx"))) == len(store.packs())
    fresh = DiskObjectStore(tmp_path / "objects")
    assert [fresh.get(o) for o in ids] == [b"object %d" % i for i in range(12)]
    assert sorted(o for o, _ in fresh.iter_stored()) == sorted(ids)
    assert list(fresh.verify()) == []


def test_a_reader_survives_another_processes_repack(tmp_path: Path) -> None:
    writer = DiskObjectStore.create(tmp_path / "objects")
    ids = [writer.put(b"%d" % i) for i in range(5)]
    reader = DiskObjectStore(tmp_path / "objects")
    assert reader.get(ids[0]) == b"0"
    assert writer.repack() == 5
    assert [reader.get(o) for o in ids] == [b"%d" % i for i in range(5)]
    assert len(reader.packs()) == 1


def test_leftovers_of_a_killed_writer_are_removed_and_stored_objects_kept(tmp_path: Path) -> None:
    store = DiskObjectStore.create(tmp_path / "objects")
    oid = store.put(b"kept")
    big = store.put_blob(b"x" * (2 << 20))
    (tmp_path / "objects" / "packs" / ".new.pack.tmp-0123456789ab").write_bytes(b"half a pack")
    (tmp_path / "objects" / "tmp" / "blob-0123456789abcdef").write_bytes(b"half a blob")
    assert store.remove_temporaries() == 2
    assert store.remove_temporaries() == 0
    assert store.get(oid) == b"kept" and store.read_blob(big) == b"x" * (2 << 20)
    assert list(store.verify()) == []
