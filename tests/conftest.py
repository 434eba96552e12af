"""Shared fixtures and hypothesis settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "dsvc", deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
settings.load_profile("dsvc")

SHARED_FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"


@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    """An initialised, empty repository folder."""
    from dsvc.repo import Repo

    Repo.init(tmp_path / "repo")
    return tmp_path / "repo"
