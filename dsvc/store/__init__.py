"""The local object store: packs of small structured objects and blobs, loose files for large blobs."""

from dsvc.store.disk import DiskObjectStore
from dsvc.store.memory import MemoryObjectStore
from dsvc.store.objectstore import ObjectStore, StoreCounters
from dsvc.store.overlay import OverlayObjectStore

__all__ = ["DiskObjectStore", "MemoryObjectStore", "ObjectStore", "OverlayObjectStore", "StoreCounters"]
