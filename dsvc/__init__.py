"""dsvc: Git-style, content-addressed version control for ML datasets."""

from typing import Any

from dsvc.errors import DsvcError
from dsvc.repo import Repo

__all__ = ["DsvcError", "Repo", "__version__"]


def __getattr__(name: str) -> Any:
    # Looked up on demand: importlib.metadata costs start-up time on every command.
    if name == "__version__":
        from importlib.metadata import version

        return version("dsvc")
    raise AttributeError(name)
