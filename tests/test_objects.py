"""Objects and codec: canonical bytes, round trips, refusal of malformed or newer data."""

from __future__ import annotations

import math

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsvc import codec
from dsvc.errors import CorruptObject, UnsupportedFormat
from dsvc.hashing import hash_bytes
from dsvc.model import RLE, Annotation, BBox, polygon
from dsvc.objects import (
    FORMAT_VERSION,
    Commit,
    FileEntry,
    Frame,
    Labels,
    Node,
    Signature,
    decode_object,
    load,
)
from tests import strategies as S


@given(S.objects)
def test_encode_decode_encode_is_identity(obj: object) -> None:
    data = obj.to_bytes()  # type: ignore[attr-defined]
    again = decode_object(data)
    assert again.to_bytes() == data
    assert again.id == hash_bytes(data) == obj.id  # type: ignore[attr-defined]


@given(S.objects)
def test_decoded_objects_equal_the_originals_after_normalisation(obj: object) -> None:
    once = decode_object(obj.to_bytes())  # type: ignore[attr-defined]
    assert decode_object(once.to_bytes()) == once


@given(S.objects)
def test_element_spans_are_the_encodings_of_an_arrays_elements(obj: object) -> None:
    data = obj.to_bytes()  # type: ignore[attr-defined]
    value = codec.decode(data)
    spans = codec.element_spans(data)
    assert [data[start:end] for start, end in spans] == [codec.encode(v) for v in value]
    assert spans[-1][1] == len(data)


@pytest.mark.parametrize("data", [b"", b"\x93\x01", b"\xc1", b"\x92\xc4\x05ab"])
def test_element_spans_of_malformed_bytes_raise(data: bytes) -> None:
    with pytest.raises(CorruptObject):
        codec.element_spans(data)


@given(S.metadata, S.metadata)
def test_map_order_never_changes_the_bytes(a: dict, b: dict) -> None:
    merged = {**a, **b}
    reordered = dict(reversed(list(merged.items())))
    assert codec.encode(codec.canonical(merged)) == codec.encode(codec.canonical(reordered))


def test_floats_are_always_float64_and_ints_minimal() -> None:
    assert codec.encode(codec.canonical([1.5])) == b"\x91\xcb" + bytes.fromhex("3ff8000000000000")
    assert codec.encode(5) == b"\x05"
    assert codec.encode(300) == b"\xcd\x01\x2c"


def test_nan_is_refused() -> None:
    with pytest.raises(ValueError, match="NaN"):
        codec.canonical({"x": [math.nan]})
    with pytest.raises(ValueError, match="finite"):
        BBox(0, 0, math.nan, 1)
    with pytest.raises(ValueError, match="negative size"):
        BBox(0, 0, -1, 1)
    with pytest.raises(ValueError, match="finite"):
        Annotation("car", score=math.inf)


def test_geometry_validation() -> None:
    with pytest.raises(ValueError, match="counts sum"):
        RLE(2, 2, (1, 1))
    with pytest.raises(ValueError, match="at least 3"):
        polygon([[0, 0, 1, 1]])
    with pytest.raises(ValueError, match="class"):
        Annotation("")


@given(st.binary(max_size=3000), st.sampled_from([0, 3, -1]))
def test_frame_round_trip(data: bytes, level: int) -> None:
    stored = codec.frame(data, level)
    assert codec.unframe(stored) == data
    assert len(stored) <= len(data) + codec.HEADER_SIZE  # incompressible data is stored raw


def test_unframe_refuses_damage() -> None:
    for bad in (b"", b"\x07abc", b"\x01not zstd"):
        with pytest.raises(CorruptObject):
            codec.unframe(bad)


def test_oversized_objects_are_refused() -> None:
    stored = codec.frame(b"a" * 10_000)
    with pytest.raises(CorruptObject, match="exceeds"):
        codec.unframe(stored, max_size=1000)


def test_newer_format_versions_are_refused_clearly() -> None:
    data = codec.encode(["labels", FORMAT_VERSION + 1, []])
    with pytest.raises(UnsupportedFormat, match="format version"):
        decode_object(data)


def test_wrong_kind_and_garbage_are_corrupt() -> None:
    with pytest.raises(CorruptObject, match="expected a commit"):
        load(Labels(()).to_bytes(), Commit)
    for garbage in (codec.encode(["nope", 1]), codec.encode(42), b"\xc1", codec.encode(["frame", 1, "x"])):
        with pytest.raises(CorruptObject):
            decode_object(garbage)


def test_id_is_blake3_of_uncompressed_bytes() -> None:
    import blake3

    frame = Frame((), {"weather": "rain"})
    assert frame.id == blake3.blake3(frame.to_bytes()).digest()


def test_node_and_file_entry_values() -> None:
    node = Node(1, (b"a", b"b"), (b"\x01" * 32, b"\x02" * 32), (3, 4))
    assert node.size == 7 and Node(0, (b"a",), (b"x",)).size == 1
    entry = FileEntry(b"\x03" * 32, 0o644, 12)  # type: ignore[arg-type]
    assert FileEntry.from_bytes(entry.to_bytes()) == entry
    with pytest.raises(CorruptObject):
        FileEntry.from_bytes(codec.encode([1, 2]))
    assert Signature("a", "b", 1, 60) == Signature.from_value(Signature("a", "b", 1, 60).to_value())


@given(S.labels)
def test_trusted_decoding_builds_what_validating_decoding_builds(labels: Labels) -> None:
    decoded = load(labels.to_bytes(), Labels)
    checked = decoded.validated()
    assert decoded.to_bytes() == checked.to_bytes() == labels.to_bytes()
    for fast, slow in zip(decoded.annotations, checked.annotations, strict=True):
        for name in ("label", "id", "bbox", "polygon", "mask", "keypoints", "iscrowd", "area", "score"):
            assert getattr(fast, name) == getattr(slow, name) and type(getattr(fast, name)) is type(
                getattr(slow, name)
            )


@given(S.labels)
def test_annotation_values_are_the_stored_values_however_labels_were_made(labels: Labels) -> None:
    stored = [codec.decode(codec.encode(a.to_value())) for a in labels.annotations]
    decoded = load(labels.to_bytes(), Labels)
    assert list(decoded.annotation_values()) == stored
    assert "annotations" not in decoded.__dict__  # the values were read without building Annotations
    parsed = Labels.from_encoded_annotations([codec.encode(a.to_value()) for a in labels.annotations])
    assert list(parsed.annotation_values()) == stored
    assert [codec.decode(codec.encode(v)) for v in labels.annotation_values()] == stored
    assert decoded.to_bytes() == labels.to_bytes()  # and the Annotations built on first read are the same


def test_malformed_stored_annotations_are_corrupt_when_decoded_or_first_read() -> None:
    value = Annotation("cat", 1, BBox(1, 2, 3, 4)).to_value()
    short = codec.encode([Labels.KIND, FORMAT_VERSION, [value[:9]]])
    with pytest.raises(CorruptObject, match="fields"):
        load(short, Labels)
    value[2] = [1.0, 2.0, 3.0]  # a box of three numbers: the right shape outside, wrong inside
    lazy = load(codec.encode([Labels.KIND, FORMAT_VERSION, [value]]), Labels)
    with pytest.raises(CorruptObject, match="malformed labels"):
        _ = lazy.annotations


@given(S.labels)
def test_labels_from_encoded_annotations_are_the_labels_themselves(labels: Labels) -> None:
    encoded = [codec.encode(a.to_value()) for a in labels.annotations]
    built = Labels.from_encoded_annotations(encoded)
    assert built.encoded == labels.encoded and built.id == labels.id
    assert built.annotations == decode_object(labels.encoded).annotations  # decoded on first read
    assert built == decode_object(labels.encoded)


def test_map_key_orders_are_remembered_only_for_string_keys() -> None:
    def expected(*items: object) -> bytes:
        return b"\x82" + b"".join(codec.encode(v) for v in items)

    assert codec.encode(codec.canonical({1: "a", 2.5: "b"})) == expected(1, "a", 2.5, "b")
    # True == 1: an order remembered for the keys (1, 2.5) must not be used for (True, 2.5)
    assert codec.encode(codec.canonical({True: "a", 2.5: "b"})) == expected(True, "a", 2.5, "b")
    keys = {"bb": 1, "a": 2, "ccc": 3}
    assert list(codec.canonical(keys)) == list(codec.canonical(dict(reversed(keys.items()))))
    assert list(codec.canonical(keys)) == ["a", "bb", "ccc"]


_payloads = (
    st.binary(max_size=200)
    | st.builds(
        lambda head, n, size: (head + b"label,0.5;" * n)[:size] if size else head,
        st.sampled_from([b"", b"\xff\xd8\xff", b"\x89PNG"]),
        st.integers(0, 3000),
        st.sampled_from([0, 64, 20_000, 4 * codec.PROBE]),
    )
    | st.binary(min_size=4 * codec.PROBE, max_size=4 * codec.PROBE + 10)
)


def _expected_kind(data: bytes, level: int, blob: bool) -> int:
    """The framing rules, spelled out: raw when uncompressed or when zstd does not shrink the bytes; a
    blob also raw when it looks compressed, or when its first PROBE bytes shrink by less than 10%."""
    raw, packed = (codec.BLOB_RAW, codec.BLOB_ZSTD) if blob else (codec.RAW, codec.ZSTD)
    if level == 0 or len(data) < codec.MIN_COMPRESS:
        return raw
    if blob and (data.startswith(codec._COMPRESSED_MAGIC) or data[4:8] == b"ftyp"):
        return raw
    if blob and len(data) >= 4 * codec.PROBE:
        sample = zstandard.ZstdCompressor(level=level, write_content_size=True).compress(data[: codec.PROBE])
        if len(sample) > 0.9 * codec.PROBE:
            return raw
    shrunk = zstandard.ZstdCompressor(level=level, write_content_size=True).compress(data)
    return packed if len(shrunk) < len(data) else raw


@settings(suppress_health_check=[HealthCheck.data_too_large])  # blobs past 4 x PROBE are the point
@given(st.lists(st.tuples(_payloads, st.sampled_from([0, 1, 3]), st.booleans()), max_size=6))
def test_framing_many_at_once_follows_the_rules_and_gives_the_bytes_of_framing_each(
    items: list[tuple[bytes, int, bool]],
) -> None:
    framed = codec.frame_many(items)  # two or more entries go through one multi-threaded zstd call
    assert framed == [codec.frame_many([item])[0] for item in items]
    assert [codec.stored_kind(f) for f in framed] == [_expected_kind(*item) for item in items]
    assert [codec.unframe(f) for f in framed] == [data for data, _, _ in items]
