"""The local object store: packs of small structured objects and loose media blobs."""

from dsvc.store.objectstore import DiskObjectStore, MemoryObjectStore, ObjectStore, StoreCounters

__all__ = ["DiskObjectStore", "MemoryObjectStore", "ObjectStore", "StoreCounters"]
