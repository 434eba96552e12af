"""The collector pause used around bulk work restores whatever state it found."""

from __future__ import annotations

import gc

import pytest

from dsvc.gcpause import bulk, paused_gc


def test_paused_gc_restores_the_collector_state() -> None:
    assert gc.isenabled()
    with paused_gc():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with paused_gc():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_bulk_pauses_during_the_call_and_resumes_even_after_an_error() -> None:
    seen = []

    @bulk
    def work(fail: bool) -> int:
        seen.append(gc.isenabled())
        if fail:
            raise ValueError("boom")
        return 7

    assert work(False) == 7
    with pytest.raises(ValueError, match="boom"):
        work(True)
    assert seen == [False, False] and gc.isenabled()
    assert work.__name__ == "work"
