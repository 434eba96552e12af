"""dsvc: Git-style, content-addressed version control for ML datasets."""

from importlib.metadata import version

from dsvc.errors import DsvcError
from dsvc.repo import Repo

__version__ = version("dsvc")

__all__ = ["DsvcError", "Repo", "__version__"]
