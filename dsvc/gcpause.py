"""Pausing Python's cyclic garbage collector around bulk work.

Staging, checkout and rendering build hundreds of thousands of small acyclic objects (annotations, frames,
nodes). Each full collection walks the whole growing heap, and there are many of them: measured on 20k
frames, they took half of a checkout's time. Nothing these operations build is cyclic garbage, so the
collector has nothing to find there.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic collector; on leaving, move what survived straight to the oldest generation
    (freeze then unfreeze, no scan), so the next young collection does not walk it all."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.unfreeze()
        if enabled:
            gc.enable()


def bulk(func: Callable[P, R]) -> Callable[P, R]:
    """Run a function with the collector paused (see `paused_gc`)."""

    @functools.wraps(func)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        with paused_gc():
            return func(*args, **kwargs)

    return run
