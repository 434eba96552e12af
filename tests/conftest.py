"""Shared fixtures and hypothesis settings."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, settings

if TYPE_CHECKING:
    from tests.seaweed import SeaweedServer

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


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """One real SeaweedFS server (`weed server -s3`) for the whole session; tests use fresh prefixes."""
    from tests import seaweed as weed

    server = weed.start(tmp_path_factory.mktemp("seaweed"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_url(seaweed: SeaweedServer) -> str:
    """A fresh, empty remote prefix on the session's SeaweedFS bucket."""
    from tests.seaweed import BUCKET

    return f"s3://{BUCKET}/t{secrets.token_hex(6)}"
