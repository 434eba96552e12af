"""Typed immutable objects and their canonical bytes: `[kind, version, ...fields]` in msgpack.

An object's id is the BLAKE3 of these bytes (uncompressed). Every kind carries its format version, and a
version newer than this code knows is refused rather than misread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, ClassVar, NamedTuple, TypeVar

import numpy as np

from dsvc import codec
from dsvc.errors import CorruptObject, UnsupportedFormat
from dsvc.hashing import ID_SIZE, ObjectId, hash_bytes
from dsvc.model import ANNOTATION_FIELDS, Annotation, trusted_from_value

FORMAT_VERSION = 1


def _oid(value: Any) -> ObjectId:
    if not isinstance(value, bytes) or len(value) != ID_SIZE:
        raise ValueError(f"not an object id: {value!r}")
    return ObjectId(value)


def _opt_oid(value: Any) -> ObjectId | None:
    return None if value is None else _oid(value)


@dataclass(frozen=True)
class Signature:
    """Who did something and when: seconds since the epoch plus the zone offset in minutes."""

    name: str
    email: str
    time: int
    tz_minutes: int = 0

    def to_value(self) -> list[Any]:
        return [self.name, self.email, self.time, self.tz_minutes]

    @classmethod
    def from_value(cls, value: list[Any]) -> Signature:
        name, email, time, tz = value
        return cls(str(name), str(email), int(time), int(tz))


class StoredObject:
    """Shared behaviour of every object kind: canonical bytes, id, decoding."""

    KIND: ClassVar[str]

    def fields_value(self) -> list[Any]:
        raise NotImplementedError

    @classmethod
    def from_fields(cls, values: list[Any]) -> StoredObject:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        return codec.encode([self.KIND, FORMAT_VERSION, *codec.canonical(self.fields_value())])

    # Cached by hand: functools.cached_property takes a lock on every access in Python 3.11.
    @property
    def encoded(self) -> bytes:
        """The canonical bytes, computed once."""
        cache = self.__dict__
        if "_encoded" not in cache:
            cache["_encoded"] = self.to_bytes()
        return cache["_encoded"]  # type: ignore[no-any-return]

    @property
    def id(self) -> ObjectId:
        cache = self.__dict__
        if "_id" not in cache:
            cache["_id"] = hash_bytes(self.encoded)
        return cache["_id"]  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Media:
    """One media file of a frame: a stored blob (id and size) or an external URL, under a path."""

    path: str
    blob: ObjectId | None = None
    size: int | None = None
    url: str | None = None

    def to_value(self) -> list[Any]:
        return [self.path, self.blob, self.size, self.url]

    @classmethod
    def from_value(cls, value: list[Any]) -> Media:
        path, blob, size, url = value
        return cls(str(path), _opt_oid(blob), size, url)


@dataclass(frozen=True)
class Frame(StoredObject):
    """A frame: its media references, its metadata (everything the source says besides labels), and the
    path of the annotation source that names it, so each source can be rendered from its own frames."""

    KIND: ClassVar[str] = "frame"
    media: tuple[Media, ...]
    metadata: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""

    def fields_value(self) -> list[Any]:
        return [[m.to_value() for m in self.media], dict(self.metadata), self.source]

    def to_bytes(self) -> bytes:
        # Hot path: only the free-form metadata needs canonicalising; media values are plain already.
        media = [m.to_value() for m in self.media]
        return codec.encode([self.KIND, FORMAT_VERSION, media, codec.canonical(self.metadata), self.source])

    @classmethod
    def from_fields(cls, values: list[Any]) -> Frame:
        media, metadata, source = values
        return cls(tuple(Media.from_value(m) for m in media), dict(metadata), str(source))


@dataclass(frozen=True)
class Labels(StoredObject):
    """All annotations of one frame, in source order."""

    KIND: ClassVar[str] = "labels"
    annotations: tuple[Annotation, ...]

    def fields_value(self) -> list[Any]:
        return [[a.to_value() for a in self.annotations]]

    def to_bytes(self) -> bytes:
        # Hot path (a million annotations in a dataset): Annotation.to_value is already canonical.
        return codec.encode([self.KIND, FORMAT_VERSION, [a.to_value() for a in self.annotations]])

    @classmethod
    def from_fields(cls, values: list[Any]) -> Labels:
        """Decode stored labels, keeping each annotation's value: the Annotations are built (trusted,
        see model.trusted_from_value) on the first read of `annotations`, and a renderer that needs
        only the values (`annotation_values`) never builds them."""
        (annotations,) = values
        if any(len(a) != ANNOTATION_FIELDS for a in annotations):
            raise ValueError(f"an annotation has other than {ANNOTATION_FIELDS} fields")
        labels = object.__new__(cls)
        labels.__dict__["_values"] = annotations
        return labels

    @classmethod
    def from_encoded_annotations(cls, encoded: list[bytes]) -> Labels:
        """Labels from the canonical encoding of each annotation's value (`Annotation.to_value`), which
        a parser of a million annotations builds without Annotation objects. The encodings become the
        object's bytes as they are; the annotations are decoded only if something reads them."""
        labels = object.__new__(cls)
        labels.__dict__["_encoded"] = b"".join((LABELS_PREFIX, codec.array_header(len(encoded)), *encoded))
        return labels

    def annotation_values(self) -> Sequence[Sequence[Any]]:
        """Each annotation's value in `Annotation.to_value`'s layout, without building Annotations when
        the labels were decoded or parsed (what rendering a million of them needs)."""
        cache = self.__dict__
        if "_values" in cache:
            return cache["_values"]  # type: ignore[no-any-return]
        if "annotations" in cache:
            return [a.to_value() for a in self.annotations]
        _, _, cache["_values"] = codec.decode(cache["_encoded"])
        return cache["_values"]  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        # Reached only when `annotations` is unset: Labels decoded or parsed (from_fields,
        # from_encoded_annotations), until their annotations are first read.
        cache = self.__dict__
        if name != "annotations" or ("_values" not in cache and "_encoded" not in cache):
            raise AttributeError(name)
        try:
            decoded = tuple(trusted_from_value(a) for a in self.annotation_values())
        except (TypeError, ValueError) as exc:
            raise CorruptObject(f"malformed labels object: {exc}") from None
        cache["annotations"] = decoded
        cache.pop("_values", None)  # held once: as Annotations now
        return decoded

    def validated(self) -> Labels:
        """The same labels, checked by the validating constructors: for objects that came from outside."""
        return Labels(tuple(Annotation.from_value(a.to_value()) for a in self.annotations))


LABELS_PREFIX = codec.array_header(3) + codec.encode(Labels.KIND) + codec.encode(FORMAT_VERSION)


@dataclass(frozen=True)
class Node(StoredObject):
    """A Merkle map node. Leaves (level 0) hold sorted keys and values; internal nodes hold each child's
    last key, id and subtree entry count."""

    KIND: ClassVar[str] = "node"
    level: int
    keys: tuple[bytes, ...]
    values: tuple[bytes, ...]
    counts: tuple[int, ...] = ()

    def fields_value(self) -> list[Any]:
        return [self.level, list(self.keys), list(self.values), list(self.counts)]

    def to_bytes(self) -> bytes:
        # Hot path: nodes hold no maps or floats, so canonicalisation has nothing to do.
        return codec.encode([self.KIND, FORMAT_VERSION, self.level, self.keys, self.values, self.counts])

    @classmethod
    def from_fields(cls, values: list[Any]) -> Node:
        level, keys, vals, counts = values
        if not isinstance(level, int) or level < 0 or len(keys) != len(vals):
            raise ValueError("malformed node")
        if level and len(counts) != len(keys):
            raise ValueError("internal node without a count per child")
        return cls.make(level, keys, vals, counts)

    @classmethod
    def make(
        cls, level: int, keys: tuple[bytes, ...], values: tuple[bytes, ...], counts: tuple[int, ...]
    ) -> Node:
        """Construct without the frozen dataclass's per-field checks: the tree makes millions of these."""
        node = object.__new__(cls)
        node.__dict__.update(level=level, keys=keys, values=values, counts=counts)
        return node

    @property
    def size(self) -> int:
        """Entries in the subtree under this node."""
        return sum(self.counts) if self.level else len(self.keys)


# An encoded child id is msgpack bin8 of 32 bytes, so a node's child ids are a block of fixed-size records.
_ID_RECORD = 2 + ID_SIZE
_NODE_PREFIX = codec.array_header(6) + codec.encode(Node.KIND) + codec.encode(FORMAT_VERSION)


class NodeChildren(NamedTuple):
    """An internal node's encoded keys and the block of its encoded child ids, read from its canonical
    bytes without decoding one item: two versions of a wide node then compare in a few C-level steps,
    where decoding them would build three Python objects per child."""

    keys: bytes
    ids: bytes

    @classmethod
    def read(cls, data: bytes) -> NodeChildren | None:
        """The children of an encoded internal node, or None for a leaf or any other layout."""
        spans = codec.element_spans(data)
        if len(spans) != 6 or data[: spans[2][0]] != _NODE_PREFIX or data[spans[2][0]] == 0:
            return None  # not a node of this format, or a leaf (level 0)
        (keys_start, keys_end), (ids_start, ids_end) = spans[3], spans[4]
        ids = data[ids_start + {0xDC: 3, 0xDD: 5}.get(data[ids_start], 1) : ids_end]  # past the array header
        n = len(ids) // _ID_RECORD
        if len(ids) % _ID_RECORD or ids[::_ID_RECORD] != b"\xc4" * n or ids[1::_ID_RECORD] != b"\x20" * n:
            return None
        return cls(data[keys_start:keys_end], ids)

    def changed(self, other: NodeChildren) -> list[int]:
        """Where the child ids of two nodes with the same keys differ, descending: one vectorised compare."""
        mine, theirs = np.frombuffer(self.ids, f"S{_ID_RECORD}"), np.frombuffer(other.ids, f"S{_ID_RECORD}")
        return np.flatnonzero(mine != theirs)[::-1].tolist()  # type: ignore[no-any-return]

    def child(self, position: int) -> bytes:
        start = position * _ID_RECORD + 2
        return self.ids[start : start + ID_SIZE]


@dataclass(frozen=True)
class Commit(StoredObject):
    """A frozen version: each column map's root (frames, labels, files, ...), parents, author, message."""

    KIND: ClassVar[str] = "commit"
    roots: Mapping[str, ObjectId]
    parents: tuple[ObjectId, ...]
    author: Signature
    message: str

    def fields_value(self) -> list[Any]:
        return [dict(self.roots), list(self.parents), self.author.to_value(), self.message]

    @classmethod
    def from_fields(cls, values: list[Any]) -> Commit:
        roots, parents, author, message = values
        return cls(
            {str(k): _oid(v) for k, v in roots.items()},
            tuple(_oid(p) for p in parents),
            Signature.from_value(author),
            str(message),
        )


@dataclass(frozen=True)
class Checkpoint(StoredObject):
    """A named, annotated pointer to a commit. Edits write a new object whose `previous` is the old one."""

    KIND: ClassVar[str] = "checkpoint"
    name: str
    commit: ObjectId
    description: str
    metadata: Mapping[str, Any]
    created: Signature
    archived: bool = False
    previous: ObjectId | None = None

    def fields_value(self) -> list[Any]:
        return [
            self.name,
            self.commit,
            self.description,
            dict(self.metadata),
            self.created.to_value(),
            self.archived,
            self.previous,
        ]

    @classmethod
    def from_fields(cls, values: list[Any]) -> Checkpoint:
        name, commit, description, metadata, created, archived, previous = values
        return cls(
            str(name),
            _oid(commit),
            str(description),
            dict(metadata),
            Signature.from_value(created),
            bool(archived),
            _opt_oid(previous),
        )


@dataclass(frozen=True)
class InferenceSet(StoredObject):
    """One version of a model's predictions: a map frame id -> Labels (with scores), tied to a checkpoint."""

    KIND: ClassVar[str] = "inference"
    name: str
    model: str
    predictions: ObjectId
    checkpoint: ObjectId | None
    parents: tuple[ObjectId, ...]
    metadata: Mapping[str, Any]
    created: Signature
    message: str = ""

    def fields_value(self) -> list[Any]:
        return [
            self.name,
            self.model,
            self.predictions,
            self.checkpoint,
            list(self.parents),
            dict(self.metadata),
            self.created.to_value(),
            self.message,
        ]

    @classmethod
    def from_fields(cls, values: list[Any]) -> InferenceSet:
        name, model, predictions, checkpoint, parents, metadata, created, message = values
        return cls(
            str(name),
            str(model),
            _oid(predictions),
            _opt_oid(checkpoint),
            tuple(_oid(p) for p in parents),
            dict(metadata),
            Signature.from_value(created),
            str(message),
        )


@dataclass(frozen=True)
class Source(StoredObject):
    """An annotation source: where its file lives, its format, its media folder, and the dataset-level data
    (categories, info, licenses, class names...) needed to render it again from frames and labels."""

    KIND: ClassVar[str] = "source"
    path: str
    format: str
    media: str
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def fields_value(self) -> list[Any]:
        return [self.path, self.format, self.media, dict(self.metadata)]

    @classmethod
    def from_fields(cls, values: list[Any]) -> Source:
        path, fmt, media, metadata = values
        return cls(str(path), str(fmt), str(media), dict(metadata))


KINDS: dict[str, type[StoredObject]] = {
    kind.KIND: kind for kind in (Frame, Labels, Node, Commit, Checkpoint, InferenceSet, Source)
}

T = TypeVar("T", bound=StoredObject)


def decode_object(data: bytes, expect: type[T] | None = None) -> StoredObject:
    """Decode canonical bytes into their typed object; anything malformed raises CorruptObject."""
    value = codec.decode(data)
    if not isinstance(value, tuple) or len(value) < 2 or not isinstance(value[0], str):
        raise CorruptObject("not a dsvc object")
    kind, version, *rest = value
    cls = KINDS.get(kind)
    if cls is None:
        raise CorruptObject(f"unknown object kind {kind!r}")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise UnsupportedFormat(
            f"{kind} object has format version {version}; this dsvc reads up to {FORMAT_VERSION}"
        )
    if expect is not None and cls is not expect:
        raise CorruptObject(f"expected a {expect.KIND} object, found a {kind}")
    try:
        return cls.from_fields(rest)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise CorruptObject(f"malformed {kind} object: {exc}") from None


def load(data: bytes, expect: type[T]) -> T:
    """Decode bytes that must hold an object of the given kind."""
    obj = decode_object(data, expect)
    assert isinstance(obj, expect)
    return obj


def to_jsonable(value: Any) -> Any:
    """Return a JSON-ready view of an object: ids as hex, dataclasses as maps with a `kind`."""
    if is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {"kind": value.KIND} if isinstance(value, StoredObject) else {}
        for f in fields(value):
            out[f.name] = to_jsonable(getattr(value, f.name))
        return out
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return value


@dataclass(frozen=True)
class FileEntry:
    """The value of a `files` map entry: a tracked file's blob id, mode and size (not a stored object)."""

    blob: ObjectId
    mode: int
    size: int

    def to_bytes(self) -> bytes:
        return codec.encode([self.blob, self.mode, self.size])

    @classmethod
    def from_bytes(cls, data: bytes) -> FileEntry:
        try:
            blob, mode, size = codec.decode(data)
            return cls(_oid(blob), int(mode), int(size))
        except (TypeError, ValueError) as exc:
            raise CorruptObject(f"malformed file entry: {exc}") from None
