"""The chunked JSON reader: whatever the document, it reads the same values as orjson does whole, and a
malformed document gets load_json's own error."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsvc.errors import InvalidInput
from dsvc.formats.common import load_json
from dsvc.formats.jsonsplit import load_split

# Strings full of what a bracket scan could trip on: brackets, quotes, backslashes, escapes.
_tricky = st.text(alphabet=st.sampled_from('[]{}",\\: aé\n\t\u2028'), max_size=8)
_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _tricky,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_tricky, inner, max_size=4),
    max_leaves=12,
)
_keys = st.sampled_from(["items", "other", "x", "[", '"', "\\"]) | _tricky


def _read(data: bytes, chunk: int) -> tuple[Any, list[Any] | None, int]:
    doc = load_split(data, "f.json", "items", chunk)
    if doc.chunks is None:
        return doc.fields, None, 0
    chunks = list(doc.chunks)
    return doc.fields, [item for part in chunks for item in part], len(chunks)


@settings(max_examples=300)
@given(
    doc=st.dictionaries(_keys, _values, max_size=5) | _values,
    items=st.none() | st.lists(_values, max_size=8),
    chunk=st.integers(1, 64),
    indent=st.booleans(),
)
def test_split_reads_what_orjson_reads(doc: Any, items: list[Any] | None, chunk: int, indent: bool) -> None:
    if isinstance(doc, dict) and items is not None:
        doc["items"] = items
    data = orjson.dumps(doc, option=orjson.OPT_INDENT_2 if indent else 0)
    expected = orjson.loads(data)
    fields, streamed, _ = _read(data, chunk)
    if isinstance(expected, dict) and isinstance(expected.get("items"), list):
        assert streamed == expected.pop("items")
    else:
        assert streamed is None
    assert fields == expected


def test_a_large_array_comes_in_many_chunks_of_whole_elements() -> None:
    items = [{"id": i, "s": "]}" * (i % 3), "xs": [[i, i]]} for i in range(200)]
    data = orjson.dumps({"a": 1, "items": items, "b": [1, 2]})
    fields, streamed, chunks = _read(data, 100)
    assert fields == {"a": 1, "b": [1, 2]} and streamed == items and chunks > 50


def test_repeated_keys_keep_the_last_value_as_orjson_does() -> None:
    fields, streamed, _ = _read(b'{"items": [1], "k": [2], "items": [3, 4], "k": 5}', 1)
    assert fields == {"k": 5} and streamed == [3, 4]


@pytest.mark.parametrize(
    "data",
    [
        b'{"items": [{"a": 1}, {"a": 2},]}',  # trailing comma inside the streamed array
        b'{"items": [{"a": 1} {"a": 2}]}',  # missing comma between elements
        b'{"items": [{"a": 1], "b": 2}',  # mismatched brackets
        b'{"items": [{"a": "x}], "b": 2}',  # unterminated string
        b'{"items": [1, 2]} {"c": 3}',  # a second value after the object
        b'{"items": [1, 2]',  # truncated
        b'{"items": [1, 2]}}',  # one closer too many
        b'{"items": [1, 2], "b": NaN}',
        b'{"items": [1, 2], "b": tru}',
        b'{"items": [{"a": 1}\x0c, {"a": 2}]}',  # a form feed is no JSON whitespace, even between chunks
        b"",
    ],
)
def test_malformed_documents_get_load_json_s_error(data: bytes) -> None:
    with pytest.raises(InvalidInput) as whole:
        load_json(data, "f.json")
    with pytest.raises(InvalidInput) as split:
        _read(data, 4)
    assert str(split.value) == str(whole.value)


def test_a_byte_order_mark_is_skipped() -> None:
    fields, streamed, _ = _read(b'\xef\xbb\xbf{"items": [1, 2], "b": 3}', 2)
    assert fields == {"b": 3} and streamed == [1, 2]
