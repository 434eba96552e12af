"""Read a large JSON object one top-level array at a time, in chunks of its elements.

A COCO file of a million annotations is a quarter of a gigabyte of JSON and six times that as Python
objects; parsed whole, the tree alone breaks the memory budget of an add. Here one vectorised pass finds
every bracket outside a string, which gives the span of each top-level value and of each element of the
streamed array. Every value still goes through orjson: the small values and a skeleton of the object whole,
the streamed array as chunks of whole elements, each parsed and dropped before the next; only the commas
and whitespace between chunks are checked here. Anything the pass cannot split cleanly (not an object,
unbalanced, duplicate keys) is parsed whole, which also gives the exact error of a malformed file.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
import orjson

from dsvc.formats.common import load_json

BLOCK = 1 << 24  # bytes scanned per vectorised step: bounds the scan's temporary arrays
CHUNK = 1 << 21  # bytes of streamed elements parsed at once (as objects, about 6 times that)
QUOTE, BACKSLASH = ord('"'), ord("\\")
OPENERS, CLOSERS = (ord("{"), ord("[")), (ord("}"), ord("]"))
JSON_SPACE = b" \t\r\n"  # the whitespace JSON allows (bytes.strip would take \x0b and \x0c too)
FOLD = 0x20  # "[" | FOLD == "{" and "]" | FOLD == "}"; no other byte folds onto either


@dataclass
class SplitDocument:
    """A top-level JSON value: when an object, every key but the streamed one parsed, and the streamed
    array as chunks of its elements (None when the object has no such array)."""

    fields: Any
    chunks: Iterator[list[Any]] | None


def load_split(data: bytes, path: str, streamed: str, chunk: int | None = None) -> SplitDocument:
    """Parse a JSON document whose top-level array `streamed` is read in chunks of about `chunk` bytes
    (CHUNK by default).

    A document that is not a well-formed object with distinct keys is parsed whole (its array then comes
    as one chunk), which raises the InvalidInput of load_json for a malformed one."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    pos, depth, is_open = _brackets(data)
    if not len(pos) or data[pos[0]] != OPENERS[0] or data[pos[-1]] != CLOSERS[0] or (depth[:-1] < 1).any():
        return _whole(data, path, streamed)
    openers = np.flatnonzero(is_open & (depth == 2))
    closers = np.flatnonzero(~is_open & (depth == 1))
    if depth[-1] != 0 or len(openers) != len(closers):
        return _whole(data, path, streamed)
    gaps = [int(pos[0]) + 1, *(int(pos[c]) + 1 for c in closers)]
    ends = [*(int(pos[o]) for o in openers), int(pos[-1])]
    inner = b"[]".join(data[a:b] for a, b in zip(gaps, ends, strict=True))
    try:
        fields = orjson.loads(data[: gaps[0]] + inner + data[ends[-1] :])
    except orjson.JSONDecodeError:
        return _whole(data, path, streamed)
    containers = [key for key, value in fields.items() if type(value) is list]
    if len(containers) != len(openers):  # a repeated key, whose last value wins: leave that to orjson
        return _whole(data, path, streamed)
    chunks = None
    for key, o, c in zip(containers, openers, closers, strict=True):
        start, end = int(pos[o]), int(pos[c])
        if key == streamed and data[start] == OPENERS[1] and data[end] == CLOSERS[1]:
            inside = slice(o + 1, c)
            spans = _chunk_spans(pos[inside], depth[inside], is_open[inside], start + 1, end, chunk or CHUNK)
            chunks = _parse_chunks(data, spans, path)
            del fields[key]
        else:
            fields[key] = _parse(data[start : end + 1], data, path)
    return SplitDocument(fields, chunks)


def _whole(data: bytes, path: str, streamed: str) -> SplitDocument:
    doc = load_json(data, path)
    if not isinstance(doc, dict) or not isinstance(doc.get(streamed), list):
        return SplitDocument(doc, None)
    return SplitDocument(doc, iter([doc.pop(streamed)]))


def _parse_chunks(data: bytes, spans: list[tuple[int, int]], path: str) -> Iterator[list[Any]]:
    for i, (start, end) in enumerate(spans):
        text = data[start:end].lstrip(JSON_SPACE)
        if i:  # every chunk after the first starts at the separator after an element
            if not text.startswith(b","):
                _parse(b"", data, path)
            text = text[1:]
        yield _parse(b"[" + text + b"]", data, path)


def _parse(text: bytes, data: bytes, path: str) -> Any:
    """Parse one piece; if it is malformed, so is the document: parse that whole to name the error."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        load_json(data, path)
        raise AssertionError(f"{path}: a well-formed document was split wrongly") from None


def _chunk_spans(
    pos: np.ndarray, depth: np.ndarray, is_open: np.ndarray, start: int, end: int, chunk: int
) -> list[tuple[int, int]]:
    """Cut the array's inside [start, end) after element closers about `chunk` bytes apart; never after
    the last element, so the last chunk holds it and whatever follows it."""
    ends = pos[~is_open & (depth == 2)][:-1] + 1
    picks = np.searchsorted(ends, np.arange(start + chunk, end, chunk))
    bounds = [start, *np.unique(ends[picks[picks < len(ends)]]).tolist(), end]
    return list(pairwise(bounds))


def _brackets(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions of the brackets outside strings, the nesting depth after each, and which ones open."""
    arr = np.frombuffer(data, np.uint8)
    found = []
    inside = 0  # whether the block starts inside a string
    for start in range(0, len(arr), BLOCK):
        block = arr[start : start + BLOCK]
        quotes = np.flatnonzero(block == QUOTE)
        after_backslash = quotes[arr[np.maximum(quotes + start - 1, 0)] == BACKSLASH]
        escaped = [q for q in after_backslash.tolist() if q + start and _escaped(arr, start + q)]
        if escaped:
            quotes = np.setdiff1d(quotes, escaped)
        folded = block | FOLD  # "[" and "]" become "{" and "}"
        brackets = np.flatnonzero((folded == OPENERS[0]) | (folded == CLOSERS[0]))
        outside = (np.searchsorted(quotes, brackets) + inside) & 1 == 0
        found.append(brackets[outside] + start)
        inside = (inside + len(quotes)) & 1
    pos = np.concatenate(found) if found else np.array([], np.int64)
    is_open = (arr[pos] | FOLD) == OPENERS[0]
    return pos, np.cumsum(np.where(is_open, 1, -1), dtype=np.int32), is_open


def _escaped(arr: np.ndarray, at: int) -> bool:
    """Whether the quote at `at` follows an odd run of backslashes (rare: counted one by one)."""
    run = 0
    while at - run - 1 >= 0 and arr[at - run - 1] == BACKSLASH:
        run += 1
    return run % 2 == 1
