"""dsvc: Git-style, content-addressed version control for ML datasets."""

from dsvc.errors import DsvcError
from dsvc.repo import Repo

__version__ = "0.1.0"

__all__ = ["DsvcError", "Repo", "__version__"]
